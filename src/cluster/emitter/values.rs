//! What a client receives for each msgpack value an emitter published: the
//! same thing a Node socket.io server's client receives.
//!
//! A Node server decodes the message with `notepack.io` 3 into JavaScript
//! values, then encodes them again with its own parser. So:
//!
//! - nil (`undefined` or `null` on the emitter's side) reaches clients as `null`;
//! - a timestamp (extension type -1, what `notepack.io` 3 makes of a `Date`)
//!   becomes a `Date`: with the default parser the client gets its ISO string
//!   (`JSON.stringify`); with `socket.io-msgpack-parser`, which encodes with
//!   `notepack.io` 2, it gets that package's date (fixext 8, type 0, int64
//!   milliseconds), which its client decodes back into a `Date`;
//! - binary stays binary (a Buffer on a Node client, an ArrayBuffer in a browser);
//! - integers beyond 2^53 become the nearest double, as JavaScript numbers are;
//! - map keys become strings, as JavaScript object keys are;
//! - the legacy `notepack.io` 2 forms (an emitter of the 4.x line) are read
//!   too: fixext 1 type 0 is `undefined`, fixext 8 type 0 a `Date`, other
//!   type-0 extensions an ArrayBuffer. rmpv does not keep whether an
//!   extension was "fixext" or "ext 8", so an ArrayBuffer of exactly 1 or 8
//!   bytes in the legacy form reads as `undefined` or a `Date`;
//! - any other extension becomes `[type, binary]`, as `notepack.io` decodes it.

use std::collections::HashMap;

use rmpv::{Integer, Value};

use crate::config::SocketIoParser;

/// Largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Milliseconds either side of the epoch a JavaScript `Date` can hold.
const MAX_DATE_MS: f64 = 8.64e15;

/// The value clients of `parser` must receive for `value`.
pub fn for_clients(value: Value, parser: SocketIoParser) -> Value {
    match value {
        Value::Integer(n) => integer(n),
        Value::F32(f) => Value::F64(f64::from(f)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| for_clients(item, parser))
                .collect(),
        ),
        Value::Map(pairs) => object(pairs, parser),
        Value::Ext(kind, data) => extension(kind, data, parser),
        other => other,
    }
}

fn integer(n: Integer) -> Value {
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) => Value::Integer(n),
        (Some(i), _) => Value::F64(i as f64),
        (None, Some(u)) => Value::F64(u as f64),
        (None, None) => Value::Integer(n),
    }
}

/// A JavaScript object: string keys, the last of duplicate keys wins.
fn object(pairs: Vec<(Value, Value)>, parser: SocketIoParser) -> Value {
    let mut out: Vec<(Value, Value)> = Vec::with_capacity(pairs.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(pairs.len());
    for (key, value) in pairs {
        let key = key_text(&key);
        let value = for_clients(value, parser);
        match seen.get(&key) {
            Some(&at) => out[at].1 = value,
            None => {
                seen.insert(key.clone(), out.len());
                out.push((Value::from(key), value));
            }
        }
    }
    Value::Map(out)
}

/// How JavaScript turns a decoded key into a property name.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Value::Nil => "null".to_owned(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(n) => match integer(*n) {
            Value::F64(f) => number_text(f),
            _ => n.to_string(),
        },
        Value::F32(f) => number_text(f64::from(*f)),
        Value::F64(f) => number_text(*f),
        Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Array(_) | Value::Map(_) | Value::Ext(..) => "[object Object]".to_owned(),
    }
}

/// A number as JavaScript prints it, close enough for object keys.
fn number_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{f:.0}")
    } else {
        f.to_string()
    }
}

fn extension(kind: i8, data: Vec<u8>, parser: SocketIoParser) -> Value {
    let date = match (kind, data.len()) {
        (-1, 4 | 8 | 12) => Some(timestamp_ms(&data)),
        (0, 1) => return Value::Nil,
        (0, 8) => Some(legacy_date_ms(&data)),
        (0, _) => return Value::Binary(data),
        _ => None,
    };
    match date {
        Some(ms) => date_for_clients(ms, parser),
        None => Value::Array(vec![Value::from(kind), Value::Binary(data)]),
    }
}

/// A msgpack timestamp, as `notepack.io` 3 computes the `Date` (in doubles).
fn timestamp_ms(data: &[u8]) -> f64 {
    let u32_at = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    match data.len() {
        4 => f64::from(u32_at(0)) * 1e3,
        8 => {
            let hi = u32_at(0);
            let lo = u32_at(4);
            let secs = f64::from(hi & 0x3) * 4_294_967_296.0 + f64::from(lo);
            secs * 1e3 + f64::from(hi >> 2) / 1e6
        }
        _ => {
            let nanos = u32_at(0);
            let hi = u32_at(4) as i32;
            let lo = u32_at(8);
            (f64::from(hi) * 4_294_967_296.0 + f64::from(lo)) * 1e3 + f64::from(nanos) / 1e6
        }
    }
}

/// `notepack.io` 2's date: a big-endian int64 of milliseconds.
fn legacy_date_ms(data: &[u8]) -> f64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[..8]);
    i64::from_be_bytes(bytes) as f64
}

/// A `Date` as the client of `parser` receives it; an invalid one as `null`.
fn date_for_clients(ms: f64, parser: SocketIoParser) -> Value {
    // `new Date(x)` truncates towards zero and is invalid beyond ±8.64e15.
    if !ms.is_finite() || ms.abs() > MAX_DATE_MS {
        return Value::Nil;
    }
    let ms = ms.trunc() as i64;
    match parser {
        SocketIoParser::Default => Value::from(iso_string(ms)),
        SocketIoParser::Msgpack => Value::Ext(0, ms.to_be_bytes().to_vec()),
    }
}

/// `Date.prototype.toISOString`: `2024-05-01T12:00:00.000Z`, with a signed
/// six-digit year outside 0000 to 9999.
pub fn iso_string(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else if year < 0 {
        format!("-{:06}", -year)
    } else {
        format!("+{year:06}")
    };
    format!("{year}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Proleptic Gregorian date of a day count from 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_strings_match_javascript() {
        assert_eq!(iso_string(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_string(1_714_564_800_123), "2024-05-01T12:00:00.123Z");
        assert_eq!(iso_string(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(iso_string(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            iso_string(253_402_300_800_000),
            "+010000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            iso_string(-62_198_755_200_000),
            "-000001-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn timestamps_become_dates_for_each_parser() {
        // 2024-05-01T12:00:00.123Z as notepack.io 3 writes it (timestamp 64).
        let secs: u64 = 1_714_564_800;
        let nanos: u64 = 123_000_000;
        let ts64 = ((nanos << 34) | secs).to_be_bytes().to_vec();
        assert_eq!(
            for_clients(Value::Ext(-1, ts64.clone()), SocketIoParser::Default),
            Value::from("2024-05-01T12:00:00.123Z")
        );
        assert_eq!(
            for_clients(Value::Ext(-1, ts64), SocketIoParser::Msgpack),
            Value::Ext(0, 1_714_564_800_123i64.to_be_bytes().to_vec())
        );
        let ts32 = (secs as u32).to_be_bytes().to_vec();
        assert_eq!(
            for_clients(Value::Ext(-1, ts32), SocketIoParser::Default),
            Value::from("2024-05-01T12:00:00.000Z")
        );
        let mut ts96 = 0u32.to_be_bytes().to_vec();
        ts96.extend((-1i64).to_be_bytes());
        assert_eq!(
            for_clients(Value::Ext(-1, ts96), SocketIoParser::Default),
            Value::from("1969-12-31T23:59:59.000Z")
        );
    }

    #[test]
    fn other_values_become_what_javascript_makes_of_them() {
        let p = SocketIoParser::Default;
        assert_eq!(
            for_clients(Value::from(u64::MAX), p),
            Value::F64(18_446_744_073_709_551_615.0)
        );
        assert_eq!(for_clients(Value::from(7), p), Value::from(7));
        assert_eq!(for_clients(Value::Ext(0, vec![0]), p), Value::Nil);
        assert_eq!(
            for_clients(Value::Ext(5, vec![1, 2]), p),
            Value::Array(vec![Value::from(5), Value::Binary(vec![1, 2])])
        );
        let map = Value::Map(vec![
            (Value::from(1), Value::from("a")),
            (Value::from("1"), Value::from("b")),
            (Value::Nil, Value::Binary(vec![9])),
        ]);
        assert_eq!(
            for_clients(map, p),
            Value::Map(vec![
                (Value::from("1"), Value::from("b")),
                (Value::from("null"), Value::Binary(vec![9])),
            ])
        );
    }
}
