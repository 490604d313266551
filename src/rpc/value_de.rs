//! A `serde_json::Value` read as a serde `Deserializer` whose error is
//! [`ParamError`]: what a `Deserialize` impl reports (a missing field, an
//! unknown one, a wrong type or value) arrives as data, through serde's own
//! `de::Error` constructors, instead of as serde_json's English message.

use serde::de::value::{MapDeserializer, SeqDeserializer, StrDeserializer};
use serde::de::{self, IntoDeserializer, Visitor};
use serde_json::Value;

use super::param_error::ParamError;

/// `value`, to deserialize from.
#[derive(Clone, Copy)]
pub(super) struct ValueDe<'de>(pub &'de Value);

impl<'de> IntoDeserializer<'de, ParamError> for ValueDe<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for ValueDe<'de> {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (None, Some(i), _) => visitor.visit_i64(i),
                (None, None, Some(f)) => visitor.visit_f64(f),
                (None, None, None) => Err(de::Error::custom(format!("number {n} out of range"))),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.iter().map(ValueDe));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(members) => {
                let mut map = MapDeserializer::new(
                    members
                        .iter()
                        .map(|(k, v)| (StrDeserializer::<ParamError>::new(k), ValueDe(v))),
                );
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(StrDeserializer::<ParamError>::new(s)),
            Value::Object(members) if members.len() == 1 => {
                let (variant, content) = members.iter().next().expect("one member");
                visitor.visit_enum(Variant { variant, content })
            }
            other => Err(de::Error::invalid_type(
                unexpected(other),
                &"a string or an object of one member",
            )),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

/// What `value` is, in serde's terms.
pub(super) fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => de::Unexpected::Unsigned(u),
            (None, Some(i)) => de::Unexpected::Signed(i),
            _ => de::Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

/// An enum written as `{"variant": content}`.
struct Variant<'de> {
    variant: &'de String,
    content: &'de Value,
}

impl<'de> de::EnumAccess<'de> for Variant<'de> {
    type Error = ParamError;
    type Variant = ValueDe<'de>;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, ValueDe<'de>), ParamError> {
        let name = seed.deserialize(StrDeserializer::<ParamError>::new(self.variant))?;
        Ok((name, ValueDe(self.content)))
    }
}

impl<'de> de::VariantAccess<'de> for ValueDe<'de> {
    type Error = ParamError;

    fn unit_variant(self) -> Result<(), ParamError> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, ParamError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}
