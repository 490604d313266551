//! Families of metrics read off a list of figures: a name, a help text and
//! a reader per field, one sample per item.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A metric's name, its help, and how to read it off a figure.
pub(super) type Field<T, V> = (&'static str, &'static str, fn(&T) -> V);

/// Registers a gauge per field, with a sample per item labelled by `labels`.
pub(super) fn gauges<T, L>(
    registry: &mut Registry,
    fields: &[Field<T, i64>],
    items: &[T],
    labels: impl Fn(&T) -> L,
) where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    for (name, help, value) in fields {
        let family = Family::<L, Gauge>::default();
        registry.register(*name, *help, family.clone());
        for item in items {
            family.get_or_create(&labels(item)).set(value(item));
        }
    }
}
