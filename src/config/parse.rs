//! Parsers for setting values: each takes the text of one key and returns its
//! typed value, or an error naming the key, the value and the expected form.

use std::{collections::HashMap, str::FromStr, time::Duration};

use super::{ConfigError, CorsPolicy, Secret};

/// The text of one key, with what its parser needs to report an error.
pub struct Raw<'a> {
    /// The dotted key name.
    pub key: &'static str,
    /// The value as given (file, environment or default), rendered as text.
    pub text: &'a str,
    /// Where the value came from when that is not obvious (` (from PORT)`).
    pub origin: &'static str,
    /// The process environment, for keys whose default depends on the platform.
    pub env: &'a HashMap<String, String>,
}

impl Raw<'_> {
    /// An error for this key's value, expecting `expected`.
    pub fn invalid(&self, expected: &'static str) -> ConfigError {
        self.invalid_value(self.text, expected)
    }

    /// An error for this key, showing `value` instead of the raw text (e.g. masked).
    pub fn invalid_value(&self, value: &str, expected: &'static str) -> ConfigError {
        ConfigError::Invalid {
            key: self.key,
            value: value.to_owned(),
            expected,
            origin: self.origin,
        }
    }

    /// The trimmed text, or `None` when it is empty.
    pub fn non_empty(&self) -> Option<String> {
        non_empty(self.text)
    }

    /// Any `FromStr` value.
    pub fn parse<T: FromStr>(&self, expected: &'static str) -> Result<T, ConfigError> {
        self.text.trim().parse().map_err(|_| self.invalid(expected))
    }

    /// A whole number within `range`.
    pub fn bounded<T: FromStr + PartialOrd>(
        &self,
        range: std::ops::RangeInclusive<T>,
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        let value: T = self.parse(expected)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(expected))
        }
    }

    /// A whole number greater than zero.
    pub fn positive<T: FromStr + PartialOrd + Default>(&self) -> Result<T, ConfigError> {
        const EXPECTED: &str = "a whole number greater than 0";
        let value: T = self.parse(EXPECTED)?;
        if value > T::default() {
            Ok(value)
        } else {
            Err(self.invalid(EXPECTED))
        }
    }

    /// Seconds as a decimal number greater than zero, e.g. `25` or `0.5`.
    pub fn duration(&self) -> Result<Duration, ConfigError> {
        const EXPECTED: &str = "a number of seconds greater than 0, e.g. 25 or 0.5";
        let secs: f64 = self.parse(EXPECTED)?;
        if secs.is_finite() && secs > 0.0 && secs < 1.0e9 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(self.invalid(EXPECTED))
        }
    }

    /// Seconds, where 0 means "off".
    pub fn optional_duration(&self) -> Result<Option<Duration>, ConfigError> {
        const EXPECTED: &str = "a number of seconds, 0 to turn it off, e.g. 10 or 2.5";
        let secs: f64 = self.parse(EXPECTED)?;
        if secs == 0.0 {
            Ok(None)
        } else if secs.is_finite() && secs > 0.0 && secs < 1.0e9 {
            Ok(Some(Duration::from_secs_f64(secs)))
        } else {
            Err(self.invalid(EXPECTED))
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`); empty is false.
    pub fn boolean(&self) -> Result<bool, ConfigError> {
        match self.text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            _ => Err(self.invalid("`true` or `false`")),
        }
    }

    /// One of a fixed set of words, case-insensitive.
    pub fn choice<T: Copy>(
        &self,
        options: &[(&str, T)],
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        let word = self.text.trim().to_ascii_lowercase();
        options
            .iter()
            .find(|(name, _)| *name == word)
            .map(|(_, value)| *value)
            .ok_or_else(|| self.invalid_value(&word, expected))
    }
}

fn non_empty(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// An `http://` or `https://` URL, or unset.
pub fn http_url(v: &Raw<'_>) -> Result<Option<String>, ConfigError> {
    let Some(url) = v.non_empty() else {
        return Ok(None);
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(Some(url)),
        _ => Err(v.invalid_value(&mask(&url), "an http:// or https:// URL")),
    }
}

/// The name of a JWT claim: letters, digits, `_`, `-`, `.` or `:`.
pub fn claim_name(v: &Raw<'_>) -> Result<String, ConfigError> {
    const EXPECTED: &str = "a claim name of 1 to 64 letters, digits, `_`, `-`, `.` or `:`";
    let name = v.text.trim();
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(v.invalid(EXPECTED))
    }
}

/// `$DYNO` (Heroku's `web.1`) wins, then the configured name, then a generated one.
pub fn instance_id(v: &Raw<'_>) -> Result<String, ConfigError> {
    let chosen = v
        .env
        .get("DYNO")
        .and_then(|d| non_empty(d))
        .or_else(|| v.non_empty())
        .unwrap_or_else(generated_instance_id);
    let valid = chosen.len() <= 64
        && chosen
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if valid {
        Ok(chosen)
    } else {
        Err(v.invalid_value(&chosen, "at most 64 characters from A-Z a-z 0-9 . - _ :"))
    }
}

/// The prefix every generated instance id starts with.
pub const GENERATED_ID_PREFIX: &str = "ecos-";

fn generated_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded per process, which is all the uniqueness a label needs.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{GENERATED_ID_PREFIX}{:08x}", hasher.finish() as u32)
}

/// `log.level`, falling back to `RUST_LOG` when ecos's own key was left at its default.
pub fn log_level(v: &Raw<'_>) -> Result<String, ConfigError> {
    let explicit = v.env.contains_key("ECOS_LOG__LEVEL") || v.text.trim() != "info";
    let level = match v.env.get("RUST_LOG") {
        Some(rust_log) if !explicit && !rust_log.trim().is_empty() => rust_log.trim().to_owned(),
        _ => v.text.trim().to_owned(),
    };
    tracing_subscriber::EnvFilter::try_new(&level)
        .map(|_| level.clone())
        .map_err(|_| {
            v.invalid_value(
                &level,
                "a RUST_LOG-style filter such as `info` or `info,ecos=debug`",
            )
        })
}

/// `cors.allowed_origins`: empty (localhost only), `*`, or a list of origins.
pub fn cors(v: &Raw<'_>) -> Result<CorsPolicy, ConfigError> {
    let origins: Vec<String> = v
        .text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('/').to_owned())
        .collect();
    if origins.is_empty() {
        return Ok(CorsPolicy::LocalhostOnly);
    }
    if origins.iter().any(|o| o == "*") {
        return Ok(CorsPolicy::Any);
    }
    for origin in &origins {
        let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
            && origin
                .split("://")
                .nth(1)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
            && axum::http::HeaderValue::from_str(origin).is_ok();
        if !ok {
            return Err(v.invalid_value(
                origin,
                "`*` or a comma-separated list of origins such as https://app.example.com",
            ));
        }
    }
    Ok(CorsPolicy::List(origins))
}

/// `shutdown.delay_secs`: zero or more seconds (checked against the drain timeout later).
pub fn shutdown_delay(v: &Raw<'_>) -> Result<Duration, ConfigError> {
    let delay: f64 = v.parse(SHUTDOWN_DELAY_FORM)?;
    if delay.is_finite() && (0.0..1.0e9).contains(&delay) {
        Ok(Duration::from_secs_f64(delay))
    } else {
        Err(v.invalid(SHUTDOWN_DELAY_FORM))
    }
}

/// What `shutdown.delay_secs` accepts.
pub const SHUTDOWN_DELAY_FORM: &str =
    "a number of seconds from 0 to less than shutdown.drain_timeout_secs";

/// `redis.url`: unset, or a URL the Redis client itself accepts.
pub fn redis_url(v: &Raw<'_>) -> Result<Option<String>, ConfigError> {
    use redis::IntoConnectionInfo;
    let Some(url) = v.non_empty() else {
        return Ok(None);
    };
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    // Parse with the client's own parser so a URL that passes here also connects.
    if scheme_ok && url.as_str().into_connection_info().is_ok() {
        Ok(Some(url))
    } else {
        Err(v.invalid_value(
            &mask(&url),
            "a URL such as redis://host:6379 or rediss://user:password@host:port/0",
        ))
    }
}

/// The configured prefix, else `ecos-<app name>` from the platform, else `ecos`.
pub fn redis_prefix(v: &Raw<'_>) -> Result<String, ConfigError> {
    const PLATFORM_APP_NAMES: &[&str] = &[
        "HEROKU_APP_NAME",
        "FLY_APP_NAME",
        "RENDER_SERVICE_NAME",
        "RAILWAY_SERVICE_NAME",
    ];
    let prefix = v.non_empty().unwrap_or_else(|| {
        PLATFORM_APP_NAMES
            .iter()
            .find_map(|var| v.env.get(*var).and_then(|value| non_empty(value)))
            .map(|app| format!("ecos-{app}"))
            .unwrap_or_else(|| "ecos".to_owned())
    });
    channel_prefix(v, prefix)
}

/// `emitter.prefix`: the emitter's `key`, `socket.io` unless set.
pub fn emitter_prefix(v: &Raw<'_>) -> Result<String, ConfigError> {
    let prefix = v.non_empty().unwrap_or_else(|| "socket.io".to_owned());
    channel_prefix(v, prefix)
}

/// A channel prefix: both formats separate channel parts with `#`.
fn channel_prefix(v: &Raw<'_>, prefix: String) -> Result<String, ConfigError> {
    let valid = prefix.len() <= 64 && prefix.chars().all(|c| c.is_ascii_graphic() && c != '#');
    if valid {
        Ok(prefix)
    } else {
        Err(v.invalid_value(
            &prefix,
            "at most 64 visible ASCII characters, without `#` or spaces",
        ))
    }
}

/// `webhooks.url`: unset, or an `http://` or `https://` URL with a host.
pub fn webhook_url(v: &Raw<'_>) -> Result<Option<String>, ConfigError> {
    let Some(url) = v.non_empty() else {
        return Ok(None);
    };
    let valid = reqwest::Url::parse(&url).is_ok_and(|parsed| {
        matches!(parsed.scheme(), "http" | "https")
            && parsed.host_str().is_some_and(|h| !h.is_empty())
    });
    if valid {
        Ok(Some(url))
    } else {
        Err(v.invalid_value(
            &mask(&url),
            "an http:// or https:// URL such as https://backend.example.com/ecos/hooks",
        ))
    }
}

/// `webhooks.forward_headers`: comma-separated header names, lowercased.
pub fn header_names(v: &Raw<'_>) -> Result<Vec<String>, ConfigError> {
    let mut names = Vec::new();
    for name in v.text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() || names.len() >= 32 {
            return Err(v.invalid_value(
                name,
                "up to 32 comma-separated HTTP header names, such as `cookie,authorization`",
            ));
        }
        names.push(name.to_ascii_lowercase());
    }
    Ok(names)
}

/// `webhooks.events`: comma-separated client event names the contract does
/// not use, nor Socket.IO itself.
pub fn forwarded_events(v: &Raw<'_>) -> Result<Vec<String>, ConfigError> {
    let mut names: Vec<String> = Vec::new();
    for name in v.text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if crate::realtime::events::is_taken(name) {
            return Err(v.invalid_value(
                name,
                "names of the app's own events; ecos's events (message, join, leave, room:message, rooms, room:members, room:ask, latency, welcome) and Socket.IO's reserved ones (connect, connect_error, disconnect, disconnecting, newListener, removeListener) cannot be forwarded",
            ));
        }
        let valid = name.chars().count() <= 128 && !name.chars().any(char::is_control);
        if !valid || names.len() >= 256 {
            return Err(v.invalid_value(
                name,
                "up to 256 comma-separated event names of at most 128 characters, such as `order:place,chat:read`",
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// What a secret (an API key, the metrics token) may be made of.
pub const SECRET_FORM: &str = "1 to 512 visible ASCII characters without spaces or commas (e.g. the output of `openssl rand -hex 32`)";

/// `api.keys`: a comma-separated list of secrets (empty: none). An invalid one
/// is reported masked, so the error line never shows a key.
pub fn secrets(v: &Raw<'_>) -> Result<Vec<Secret>, ConfigError> {
    let mut keys = Vec::new();
    for key in v.text.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        keys.push(secret_value(v, key)?);
    }
    Ok(keys)
}

/// `metrics.token`: one secret, or unset when empty.
pub fn secret(v: &Raw<'_>) -> Result<Option<Secret>, ConfigError> {
    match v.text.trim() {
        "" => Ok(None),
        token => secret_value(v, token).map(Some),
    }
}

fn secret_value(v: &Raw<'_>, value: &str) -> Result<Secret, ConfigError> {
    let valid = (1..=512).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if valid {
        Ok(Secret::new(value))
    } else {
        Err(v.invalid_value("****", SECRET_FORM))
    }
}

/// How `--print-config` describes a list of secrets: how many, never what.
pub fn describe_secrets(count: usize) -> String {
    match count {
        1 => "1 key".to_owned(),
        n => format!("{n} keys"),
    }
}

/// Hides the password in a URL such as `rediss://user:secret@host:port`.
pub fn mask(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "****".to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:****@{host}")
        }
        None => url.to_owned(),
    }
}

/// The valid name closest to `name` by edit distance, if it is close enough to be a typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over bytes (key names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_intended_key() {
        let keys = ["port", "socketio.ping_interval_secs", "log.format"];
        assert_eq!(
            closest("socketio.ping_interval", keys),
            Some("socketio.ping_interval_secs")
        );
        assert_eq!(closest("prot", keys), Some("port"));
        assert_eq!(closest("completely.different", keys), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
