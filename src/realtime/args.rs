//! Every argument of an event or an ack, in order.

use std::fmt;

use base64::Engine;
use rmpv::Value;
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{SeqAccess, Visitor},
    ser::SerializeTuple,
};

/// Every argument of an event or an ack, in order, binary attachments
/// included (as [`Value::Binary`]).
///
/// socketioxide's extractors hand a handler only the first argument, unless
/// the target type is a tuple (or tuple struct) in serde's model; then it gets
/// the whole list. `Args` presents itself as a tuple struct of unknown length,
/// so `Data<Args>` receives every argument. It serializes as a tuple too, so
/// emitting it (or acking with it) spreads the values back into separate
/// arguments instead of sending one array.
///
/// Values are [`rmpv::Value`], which keeps binary attachments as binary;
/// `serde_json::Value` would turn them into arrays of numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args(pub Vec<Value>);

impl Args {
    /// The argument at `index`, if the client sent that many.
    pub fn get(&self, index: usize) -> Option<&Value> {
        self.0.get(index)
    }

    /// How many arguments there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for value in &self.0 {
            tuple.serialize_element(value)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;

        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = Args;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of arguments")
            }

            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Args, S::Error> {
                let mut args = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(value) = seq.next_element::<Value>()? {
                    args.push(value);
                }
                Ok(Args(args))
            }
        }

        // Neither parser checks the length, and the number of arguments is not
        // known in advance.
        deserializer.deserialize_tuple_struct("Args", usize::MAX, ArgsVisitor)
    }
}

/// The key of a binary value in JSON: `{ "$base64": "<standard base64>" }`,
/// the form the server API takes and webhooks send.
pub const BASE64_KEY: &str = "$base64";

/// Standard base64; padding is optional when decoding.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// A JSON value as a Socket.IO argument: `{ "$base64": "..." }` becomes
/// binary, at any depth. `at` names the place in error messages.
pub fn from_json(value: serde_json::Value, at: &str) -> Result<Value, String> {
    use serde_json::Value as Json;
    Ok(match value {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or_default())
            }
        }
        Json::String(s) => Value::from(s),
        Json::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| from_json(item, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(fields) if fields.contains_key(BASE64_KEY) => {
            if fields.len() != 1 {
                return Err(format!(
                    "`{at}`: an object with `{BASE64_KEY}` is a binary value and must have no other key"
                ));
            }
            let Some(Json::String(encoded)) = fields.get(BASE64_KEY) else {
                return Err(format!(
                    "`{at}.{BASE64_KEY}` must be a string of standard base64"
                ));
            };
            BASE64
                .decode(encoded.trim())
                .map(Value::Binary)
                .map_err(|e| format!("`{at}.{BASE64_KEY}` is not standard base64: {e}"))?
        }
        Json::Object(fields) => Value::Map(
            fields
                .into_iter()
                .map(|(key, item)| {
                    let place = format!("{at}.{key}");
                    Ok((Value::from(key), from_json(item, &place)?))
                })
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// A Socket.IO argument as JSON, binary as `{ "$base64": "..." }` at any
/// depth (the reverse of [`from_json`]). Map keys that are not strings are
/// written as their JSON text; numbers JSON cannot hold become `null`.
pub fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => i
            .as_u64()
            .map(Json::from)
            .or_else(|| i.as_i64().map(Json::from))
            .unwrap_or(Json::Null),
        Value::F32(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Json::Null, Json::Number)
        }
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.as_str().map_or_else(
            || String::from_utf8_lossy(s.as_bytes()).into_owned(),
            str::to_owned,
        )),
        Value::Binary(bytes) | Value::Ext(_, bytes) => {
            serde_json::json!({ BASE64_KEY: BASE64.encode(bytes) })
        }
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(key, item)| {
                    let key = match key {
                        Value::String(s) => s.as_str().map_or_else(
                            || String::from_utf8_lossy(s.as_bytes()).into_owned(),
                            str::to_owned,
                        ),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(item))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_take_every_element_and_spread_back_out() {
        let args: Args = serde_json::from_str(r#"[1,"2",{"3":[true]}]"#).unwrap();
        assert_eq!(args.len(), 3);
        assert_eq!(args.get(1), Some(&Value::from("2")));
        assert_eq!(
            serde_json::to_string(&args).unwrap(),
            r#"[1,"2",{"3":[true]}]"#
        );
        let none: Args = serde_json::from_str("[]").unwrap();
        assert_eq!(none, Args::default());
    }

    #[test]
    fn binary_goes_to_json_as_base64_and_comes_back() {
        let value = Value::Map(vec![(
            Value::from("file"),
            Value::Array(vec![Value::Binary(vec![0, 1, 255]), Value::from(7)]),
        )]);
        let json = to_json(&value);
        assert_eq!(
            json,
            serde_json::json!({ "file": [{ "$base64": "AAH/" }, 7] })
        );
        assert_eq!(from_json(json, "args[0]"), Ok(value));
        let error = from_json(serde_json::json!({ "$base64": 1 }), "args[0]").unwrap_err();
        assert_eq!(
            error,
            "`args[0].$base64` must be a string of standard base64"
        );
    }
}
