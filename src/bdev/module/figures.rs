//! What a device counts and measures, in a form any reader (the metrics
//! endpoint) takes without knowing the module: named values with their
//! meaning and the labels that tell the device apart.

/// A device's figures: its labels (beside its bdev name) and its values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Labels that go with each value, such as the image a bdev serves.
    pub labels: Vec<(&'static str, String)>,
    /// The values.
    pub values: Vec<Figure>,
}

/// One named value of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Its metric name (`pmem_pool_blocks`), without the exporter's prefix
    /// or unit and counter suffixes.
    pub name: &'static str,
    /// What it means, for a person reading the metrics.
    pub help: &'static str,
    /// The value and how it moves.
    pub value: FigureValue,
    /// Whether it is a number of bytes.
    pub bytes: bool,
}

/// A value, and whether it only ever grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FigureValue {
    /// A value now, which may go up and down.
    Gauge(i64),
    /// A count since the device was made, which only grows.
    Counter(u64),
}

impl Figure {
    /// A value now.
    pub fn gauge(name: &'static str, help: &'static str, value: impl TryInto<i64>) -> Figure {
        Figure {
            name,
            help,
            value: FigureValue::Gauge(value.try_into().unwrap_or(i64::MAX)),
            bytes: false,
        }
    }

    /// A count that only grows.
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Figure {
        Figure {
            name,
            help,
            value: FigureValue::Counter(value),
            bytes: false,
        }
    }

    /// The same figure, as a number of bytes.
    pub fn in_bytes(self) -> Figure {
        Figure {
            bytes: true,
            ..self
        }
    }
}

/// One bdev's figures, with its name and its module's.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFigures {
    /// The bdev.
    pub bdev: String,
    /// Its module.
    pub module: &'static str,
    /// What its device reports.
    pub figures: Figures,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_too_large_for_i64_saturates() {
        let f = Figure::gauge("g", "h", u64::MAX);
        assert_eq!(f.value, FigureValue::Gauge(i64::MAX));
        assert!(Figure::gauge("g", "h", 3u64).in_bytes().bytes);
    }
}
