//! Every argument of an event or an ack, in order.

use std::fmt;

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
}
