//! Typed params: a request's params read into a `Deserialize` type, and
//! when they do not fit, a -32602 error in the words every method uses,
//! built from what serde reports ([`ParamError`]) and where
//! (serde_path_to_error's path).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::param_error::ParamError;
use super::value_de::ValueDe;
use super::{RpcError, RpcResult};

/// A `P` read from `value`, or where and why it did not fit.
pub fn deserialize<P: DeserializeOwned>(
    value: &Value,
) -> std::result::Result<P, serde_path_to_error::Error<ParamError>> {
    serde_path_to_error::deserialize(ValueDe(value))
}

/// The params of `method` as a `P`, or -32602 naming the field at fault.
pub fn typed_params<P: DeserializeOwned>(
    method: &str,
    params: Option<Value>,
) -> std::result::Result<P, RpcError> {
    typed_params_with(method, params, &|_| None)
}

/// [`typed_params`], where `expected` may say what the field at a path
/// must be in the method's own words (`None`: serde's expectation).
pub fn typed_params_with<P: DeserializeOwned>(
    method: &str,
    params: Option<Value>,
    expected: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<P, RpcError> {
    let refused = |value: &Value, e: serde_path_to_error::Error<ParamError>| {
        params_error(method, value, &e, expected)
    };
    match params {
        Some(value) => deserialize(&value).map_err(|e| refused(&value, e)),
        // No params: as an empty object (a struct of optional fields), else
        // as null (Option, unit); the object's error names what is missing.
        None => {
            let empty = Value::Object(Default::default());
            deserialize(&empty)
                .or_else(|e| deserialize(&Value::Null).map_err(|_| refused(&empty, e)))
        }
    }
}

/// A params error (-32602) in the words every method uses: the field's path,
/// what it must be, and what came (`field nqn must be a string, not a
/// number`; `field count must be a number from 0 to 4294967295, not -1`;
/// `missing required field listen_address.traddr`; `unknown field colour`).
/// `expected` may say what the field at a path must be in the method's own
/// words (`None`: serde's expectation).
pub fn params_error(
    method: &str,
    params: &Value,
    e: &serde_path_to_error::Error<ParamError>,
    expected: &dyn Fn(&str) -> Option<String>,
) -> RpcError {
    RpcError::invalid_params(format!("{method}: {}", explain(params, e, expected)))
}

fn explain(
    params: &Value,
    e: &serde_path_to_error::Error<ParamError>,
    expected: &dyn Fn(&str) -> Option<String>,
) -> String {
    let path = e.path().to_string();
    let serde_expected = match e.inner() {
        ParamError::Missing { field } => {
            let at = if path == "." {
                String::new()
            } else {
                format!("{path}.")
            };
            return format!("missing required field {at}{field}");
        }
        ParamError::Unknown { .. } => return format!("unknown field {path}"),
        ParamError::WrongType { expected }
        | ParamError::WrongValue { expected }
        | ParamError::WrongLength { expected } => expected.as_str(),
        ParamError::Other(message) => message.as_str(),
    };
    let must_be = expected(&path).unwrap_or_else(|| in_our_words(serde_expected));
    // A wrong type is named by its kind, a wrong value by itself.
    let value = match value_at(params, &path) {
        Some(v) if matches!(e.inner(), ParamError::WrongType { .. }) => type_name(v).to_string(),
        Some(v) => v.to_string(),
        None => "nothing".to_string(),
    };
    if path == "." {
        format!("params must be {must_be}, not {value}")
    } else {
        format!("field {path} must be {must_be}, not {value}")
    }
}

/// What serde's primitive and compound visitors expect, as a person would
/// say it.
fn in_our_words(serde_words: &str) -> String {
    match serde_words {
        "u8" | "u16" | "u32" | "u64" | "usize" => {
            let max = match serde_words {
                "u8" => u64::from(u8::MAX),
                "u16" => u64::from(u16::MAX),
                "u32" => u64::from(u32::MAX),
                _ => u64::MAX,
            };
            format!("a number from 0 to {max}")
        }
        "a sequence" => "an array".to_string(),
        "a map" => "an object".to_string(),
        "a JSON number" => "a number".to_string(),
        words if words.starts_with("struct ") => "an object".to_string(),
        words => words.to_string(),
    }
}

/// A JSON value's kind, as messages name it.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value at a serde_path_to_error path (`a.b[2].c`) in `v`.
fn value_at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path == "." {
        return Some(v);
    }
    let mut at = v;
    for part in path.split('.') {
        let (key, indices) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            at = at.get(key)?;
        }
        for index in indices.split('[').filter(|i| !i.is_empty()) {
            at = at.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(at)
}

/// `reply` as a JSON-RPC result.
pub(super) fn typed_result<R: Serialize>(method: &str, reply: R) -> RpcResult {
    serde_json::to_value(reply)
        .map_err(|e| RpcError::internal(format!("{method}: its result did not serialize: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        count: Option<u32>,
        items: Option<Vec<Item>>,
        mode: Option<Mode>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Item {
        bdev_name: String,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Fast,
        Safe,
    }

    fn message(params: Value) -> String {
        typed_params::<P>("m", Some(params)).unwrap_err().message
    }

    #[test]
    fn each_kind_of_misfit_is_named_with_its_path() {
        assert_eq!(message(json!({})), "m: missing required field name");
        assert_eq!(
            message(json!({"name": 1})),
            "m: field name must be a string, not a number"
        );
        assert_eq!(
            message(json!({"name": "a", "count": -1})),
            "m: field count must be a number from 0 to 4294967295, not -1"
        );
        assert_eq!(
            message(json!({"name": "a", "items": [{"bdev_name": 2}]})),
            "m: field items[0].bdev_name must be a string, not a number"
        );
        assert_eq!(
            message(json!({"name": "a", "items": [{}]})),
            "m: missing required field items[0].bdev_name"
        );
        assert_eq!(
            message(json!({"name": "a", "colour": 1})),
            "m: unknown field colour"
        );
        assert_eq!(
            message(json!({"name": "a", "mode": "slow"})),
            "m: field mode must be one of `fast`, `safe`, not \"slow\""
        );
    }

    #[test]
    fn the_typed_reader_takes_what_serde_json_takes() {
        let p: P = typed_params(
            "m",
            Some(json!({"name": "a", "count": 3, "items": [{"bdev_name": "b"}], "mode": "safe"})),
        )
        .unwrap();
        assert_eq!((p.name.as_str(), p.count), ("a", Some(3)));
        assert_eq!(p.items.unwrap()[0].bdev_name, "b");
        assert!(matches!(p.mode, Some(Mode::Safe)));
        assert!(matches!(
            deserialize::<Mode>(&json!("fast")),
            Ok(Mode::Fast)
        ));
        let f: f64 = deserialize(&json!(2)).unwrap();
        assert_eq!(f, 2.0);
        let o: Option<u8> = deserialize(&Value::Null).unwrap();
        assert_eq!(o, None);
        let _: () = typed_params("m", None).unwrap();
    }
}
