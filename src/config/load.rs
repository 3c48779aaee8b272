//! Layering the sources into [`Settings`]: the key table's defaults, then the
//! TOML file, then `ECOS_*` variables, then `PORT` and `REDIS_URL`.

use std::{collections::HashMap, path::PathBuf};

use config::{Config, Environment, File, FileFormat, Map, Value, ValueKind};

use super::{
    ConfigError, EmitterMode, Settings, Shown,
    keys::{self, KEYS, OTHER_ECOS_VARS},
    parse::{self, Raw},
};

/// Where settings come from: an optional file and an environment.
///
/// Passing the environment in (rather than reading the process's) lets tests
/// check the layering without touching global state.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// TOML file given with `--config` or `ECOS_CONFIG`.
    pub file: Option<PathBuf>,
    /// Environment variables, e.g. from `std::env::vars()`.
    pub env: HashMap<String, String>,
}

impl Sources {
    /// Sources from the process environment and an optional file path.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        let env: HashMap<String, String> = std::env::vars().collect();
        let file = file.or_else(|| env.get("ECOS_CONFIG").map(PathBuf::from));
        Self { file, env }
    }
}

impl Settings {
    /// Loads and validates the settings from `sources`.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        check_environment(&sources.env)?;
        let merged = merge(sources)?;
        let mut settings = Settings::default();
        for key in KEYS {
            // Every key has a default, so a missing one only happens for a
            // table given where a value belongs.
            let text = lookup(&merged, key.name).unwrap_or_default();
            let origin = match key.platform_var {
                Some("PORT") if sources.env.contains_key("PORT") => " (from PORT)",
                Some("REDIS_URL") if sources.env.contains_key("REDIS_URL") => " (from REDIS_URL)",
                _ => "",
            };
            let raw = Raw {
                key: key.name,
                text: &text,
                origin,
                env: &sources.env,
            };
            (key.apply)(&mut settings, &raw)?;
            if key.name == "instance_id" {
                settings.instance_id_generated =
                    raw.non_empty().is_none() && !sources.env.contains_key("DYNO");
            }
        }
        validate(&settings)?;
        Ok(settings)
    }

    /// The effective settings as TOML `key = value` lines (dotted keys), secrets
    /// masked, values made up at start-up shown as comments.
    pub fn to_display_string(&self) -> String {
        let mut out = String::new();
        for key in KEYS {
            let line = match (key.show)(self) {
                Shown::Value(value) => format!("{} = {value}\n", key.name),
                // TOML has no null: unset keys are comments, so the output stays valid TOML.
                Shown::Unset => format!("# {} is not set\n", key.name),
                Shown::Generated(value) => format!(
                    "# {} is generated at start-up (this time {value}); set it to pin it\n",
                    key.name
                ),
                Shown::Hidden(what) => {
                    format!("# {} is set ({what}); secrets are not printed\n", key.name)
                }
            };
            out.push_str(&line);
        }
        out
    }
}

/// Checks that need more than one key.
fn validate(settings: &Settings) -> Result<(), ConfigError> {
    let shutdown = &settings.shutdown;
    if shutdown.delay >= shutdown.drain_timeout {
        return Err(ConfigError::Invalid {
            key: "shutdown.delay_secs",
            value: shutdown.delay.as_secs_f64().to_string(),
            expected: parse::SHUTDOWN_DELAY_FORM,
            origin: "",
        });
    }
    let jwt = &settings.auth.jwt;
    if settings.auth.mode == super::AuthMode::Jwt
        && jwt.secrets.is_empty()
        && jwt.public_key_file.is_none()
        && jwt.jwks_url.is_none()
    {
        return Err(ConfigError::Requires {
            key: "auth.mode",
            value: "\"jwt\"".to_owned(),
            needs: "at least one of `auth.jwt.secrets`, `auth.jwt.public_key_file` or `auth.jwt.jwks_url`",
        });
    }
    if let Some(path) = &jwt.public_key_file {
        crate::auth::PublicKey::load(path).map_err(|e| ConfigError::Unusable {
            key: "auth.jwt.public_key_file",
            value: path.display().to_string(),
            message: e.to_string(),
        })?;
    }
    validate_webhooks(&settings.webhooks)?;
    let emitter = &settings.emitter;
    if emitter.enabled == EmitterMode::On && settings.redis.url.is_none() {
        return Err(ConfigError::Invalid {
            key: "emitter.enabled",
            value: emitter.enabled.to_string(),
            expected: "`auto` or `false` while `redis.url` is unset: the emitter reaches ecos through Redis",
            origin: "",
        });
    }
    // ecos's own adapter uses `<redis.prefix>-request#…` and `<redis.prefix>-response#…`:
    // the emitter's channels must not overlap them.
    let own = &settings.redis.prefix;
    let clashes = [
        own.clone(),
        format!("{own}-request"),
        format!("{own}-response"),
    ];
    if emitter.active(settings.redis.url.is_some()) && clashes.contains(&emitter.prefix) {
        return Err(ConfigError::Invalid {
            key: "emitter.prefix",
            value: emitter.prefix.clone(),
            expected: "a prefix other than `redis.prefix` (and its `-request` and `-response` forms), whose channels ecos's own adapter uses",
            origin: "",
        });
    }
    Ok(())
}

/// A webhook URL needs its secret and something to send; a hook needs the URL.
fn validate_webhooks(hooks: &super::WebhookSettings) -> Result<(), ConfigError> {
    match &hooks.url {
        Some(url) => {
            if hooks.secret.is_none() {
                return Err(ConfigError::Requires {
                    key: "webhooks.url",
                    value: format!("\"{}\"", parse::mask(url)),
                    needs: "`webhooks.secret`, the key that signs every request",
                });
            }
            if !hooks.connect && hooks.events.is_empty() && !hooks.disconnect {
                return Err(ConfigError::Requires {
                    key: "webhooks.url",
                    value: format!("\"{}\"", parse::mask(url)),
                    needs: "at least one of `webhooks.connect`, `webhooks.events` or `webhooks.disconnect`",
                });
            }
        }
        None => {
            let hooks_on = [
                ("webhooks.connect", hooks.connect),
                ("webhooks.events", !hooks.events.is_empty()),
                ("webhooks.disconnect", hooks.disconnect),
            ];
            if let Some((key, _)) = hooks_on.into_iter().find(|(_, on)| *on) {
                return Err(ConfigError::Requires {
                    key,
                    value: match key {
                        "webhooks.events" => format!("\"{}\"", hooks.events.join(",")),
                        _ => "true".to_owned(),
                    },
                    needs: "`webhooks.url`, the backend to call",
                });
            }
        }
    }
    Ok(())
}

/// Every `ECOS_*` variable must name a setting (or be one of the few others ecos reads).
fn check_environment(env: &HashMap<String, String>) -> Result<(), ConfigError> {
    let mut names: Vec<&String> = env.keys().filter(|k| k.starts_with("ECOS_")).collect();
    // Report the same variable first whatever the hash order.
    names.sort();
    for name in names {
        if OTHER_ECOS_VARS.contains(&name.as_str()) {
            continue;
        }
        let dotted = name["ECOS_".len()..]
            .to_ascii_lowercase()
            .replace("__", ".");
        if keys::find(&dotted).is_none() {
            return Err(ConfigError::UnknownKey {
                name: name.clone(),
                place: "the environment".to_owned(),
                suggestion: parse::closest(&dotted, KEYS.iter().map(|k| k.name)),
            });
        }
    }
    Ok(())
}

/// Every key of the file must be a setting.
fn check_file(path: &std::path::Path, file: &Config) -> Result<(), ConfigError> {
    let table: Map<String, Value> =
        file.clone()
            .try_deserialize()
            .map_err(|e| ConfigError::File {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
    let mut found = Vec::new();
    flatten_keys("", &table, &mut found);
    found.sort();
    for name in found {
        if keys::find(&name).is_none() {
            return Err(ConfigError::UnknownKey {
                suggestion: parse::closest(&name, KEYS.iter().map(|k| k.name)),
                name: format!("`{name}`"),
                place: path.display().to_string(),
            });
        }
    }
    Ok(())
}

fn flatten_keys(prefix: &str, table: &Map<String, Value>, out: &mut Vec<String>) {
    for (name, value) in table {
        let dotted = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match &value.kind {
            // A table that is itself a key is reported by the key's parser.
            ValueKind::Table(inner) if keys::find(&dotted).is_none() => {
                flatten_keys(&dotted, inner, out)
            }
            _ => out.push(dotted),
        }
    }
}

fn merge(sources: &Sources) -> Result<Config, ConfigError> {
    let merge_error = |e: config::ConfigError| ConfigError::Merge(e.to_string());
    let mut builder = Config::builder();
    for key in KEYS {
        builder = builder
            .set_default(key.name, key.default)
            .map_err(merge_error)?;
    }
    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Parsed on its own so a syntax error or an unknown key names the
        // file; the parsed config is itself a source for the layered build.
        let file = Config::builder()
            .add_source(File::from_str(&text, FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
        check_file(path, &file)?;
        builder = builder.add_source(file);
    }
    let ecos_env: Map<String, String> = sources
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("ECOS_") && !OTHER_ECOS_VARS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(
        Environment::with_prefix("ECOS")
            .prefix_separator("_")
            .separator("__")
            .source(Some(ecos_env)),
    );
    // The platform's own variables win: they are what the router and add-on set.
    for key in KEYS {
        if let Some(value) = key.platform_var.and_then(|var| sources.env.get(var)) {
            builder = builder
                .set_override(key.name, value.as_str())
                .map_err(merge_error)?;
        }
    }
    builder.build().map_err(merge_error)
}

/// The value of `key` as text, whatever type the TOML file gave it.
fn lookup(config: &Config, key: &str) -> Option<String> {
    let value: Value = config.get(key).ok()?;
    Some(render(&value))
}

fn render(value: &Value) -> String {
    match &value.kind {
        ValueKind::Nil => String::new(),
        ValueKind::Array(items) => items.iter().map(render).collect::<Vec<_>>().join(","),
        ValueKind::Table(_) => "<table>".to_owned(),
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SocketIoParser;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load(&Sources { file: None, env })
    }

    #[test]
    fn parser_and_eio3_default_to_the_standard_protocol() {
        let s = load(&[]).unwrap();
        assert_eq!(s.socketio.parser, SocketIoParser::Default);
        assert!(!s.socketio.allow_eio3);
        let text = s.to_display_string();
        assert!(text.contains("socketio.parser = \"default\""), "{text}");
        assert!(text.contains("socketio.allow_eio3 = false"), "{text}");
    }

    #[test]
    fn parser_and_eio3_are_read_from_the_environment() {
        let s = load(&[
            ("ECOS_SOCKETIO__PARSER", " MsgPack "),
            ("ECOS_SOCKETIO__ALLOW_EIO3", "true"),
        ])
        .unwrap();
        assert_eq!(s.socketio.parser, SocketIoParser::Msgpack);
        assert!(s.socketio.allow_eio3);
    }

    #[test]
    fn bad_parser_or_eio3_values_name_the_key() {
        let err = load(&[("ECOS_SOCKETIO__PARSER", "json")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid value for `socketio.parser`: \"json\"; expected `default` or `msgpack`"
        );
        let err = load(&[("ECOS_SOCKETIO__ALLOW_EIO3", "maybe")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid value for `socketio.allow_eio3`: \"maybe\"; expected `true` or `false`"
        );
    }

    #[test]
    fn every_key_has_an_env_var_that_maps_back_to_it() {
        for key in KEYS {
            let var = key.env_var();
            let dotted = var["ECOS_".len()..].to_ascii_lowercase().replace("__", ".");
            assert_eq!(dotted, key.name);
        }
    }
}
