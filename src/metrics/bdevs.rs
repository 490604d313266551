//! The figures bdevs report: each Rust module's devices say what they
//! count ([`crate::bdev::module::BlockDevice::figures`]), and SPDK's C pmem
//! module's bdevs their pools. A family per figure name, a sample per
//! bdev, labelled with its name and the labels its device gives.

use std::collections::BTreeMap;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::bdev::module::{self, DeviceFigures, FigureValue};
use crate::thread::AppThread;

type Labels = Vec<(String, String)>;

/// A family of one figure name, made when a bdev first reports it.
enum Metric {
    Gauge(Family<Labels, Gauge>),
    Counter(Family<Labels, Counter>),
}

/// Every bdev's figures, registered in `registry`.
pub(super) fn bdev_metrics(app: AppThread, registry: &mut Registry) {
    let mut all = module::all_figures(app).unwrap_or_default();
    all.extend(crate::bdev::c_pmem_figures(app).unwrap_or_default());
    register(registry, &all);
}

fn register(registry: &mut Registry, all: &[DeviceFigures]) {
    let mut families: BTreeMap<&'static str, Metric> = BTreeMap::new();
    for device in all {
        let mut labels: Labels = vec![("bdev".into(), device.bdev.clone())];
        labels.extend((device.figures.labels.iter()).map(|(k, v)| (k.to_string(), v.clone())));
        for f in &device.figures.values {
            let metric = families.entry(f.name).or_insert_with(|| {
                let unit = f.bytes.then_some(Unit::Bytes);
                match f.value {
                    FigureValue::Gauge(_) => {
                        let family = Family::<Labels, Gauge>::default();
                        register_one(registry, f.name, f.help, unit, family.clone());
                        Metric::Gauge(family)
                    }
                    FigureValue::Counter(_) => {
                        let family = Family::<Labels, Counter>::default();
                        register_one(registry, f.name, f.help, unit, family.clone());
                        Metric::Counter(family)
                    }
                }
            });
            match (metric, f.value) {
                (Metric::Gauge(family), FigureValue::Gauge(v)) => {
                    family.get_or_create(&labels).set(v);
                }
                (Metric::Counter(family), FigureValue::Counter(v)) => {
                    family.get_or_create(&labels).inc_by(v);
                }
                // One name, two kinds: a module's mistake; the first stays.
                _ => crate::log::error(&format!(
                    "metrics: bdev {} reports {} as another kind than an earlier bdev",
                    device.bdev, f.name
                )),
            }
        }
    }
}

fn register_one(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: impl prometheus_client::registry::Metric,
) {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric),
        None => registry.register(name, help, metric),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::module::{Figure, Figures};

    fn device(
        bdev: &str,
        labels: Vec<(&'static str, String)>,
        values: Vec<Figure>,
    ) -> DeviceFigures {
        DeviceFigures {
            bdev: bdev.into(),
            module: "m",
            figures: Figures { labels, values },
        }
    }

    #[test]
    fn each_figure_is_a_family_with_a_sample_per_bdev() {
        let all = [
            device(
                "a",
                vec![("module", "x".into())],
                vec![
                    Figure::gauge("pool_blocks", "blocks", 7u64),
                    Figure::gauge("block_size", "size", 512u64).in_bytes(),
                    Figure::counter("errors", "errors", 3),
                ],
            ),
            device(
                "b",
                vec![],
                vec![Figure::gauge("pool_blocks", "blocks", 9u64)],
            ),
        ];
        let mut registry = Registry::with_prefix("p");
        register(&mut registry, &all);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "p_pool_blocks{bdev=\"a\",module=\"x\"} 7",
            "p_pool_blocks{bdev=\"b\"} 9",
            "p_block_size_bytes{bdev=\"a\",module=\"x\"} 512",
            "p_errors_total{bdev=\"a\",module=\"x\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(
            text.matches("# TYPE p_pool_blocks gauge").count(),
            1,
            "{text}"
        );
    }
}
