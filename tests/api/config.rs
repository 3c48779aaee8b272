//! Configuration layering and errors: in-process for the layering, through the
//! real binary for what an operator sees (exit code and message).

use std::{collections::HashMap, io::Write, process::Command, time::Duration};

use ecos::config::{ConfigError, CorsPolicy, EmitterMode, LogFormat, Settings, Sources};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load(&Sources {
        file: None,
        env: env(pairs),
    })
}

fn toml_file(text: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::with(text)
}

/// A tiny self-deleting temp file (no extra crate for one helper).
mod tempfile_path {
    use std::path::PathBuf;
    pub struct TempPath(pub PathBuf);
    impl TempPath {
        pub fn with(text: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("ecos-test-{}-{n}.toml", std::process::id()));
            let mut file = std::fs::File::create(&path).expect("create temp file");
            super::Write::write_all(&mut file, text.as_bytes()).expect("write temp file");
            Self(path)
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn defaults_are_valid_and_production_minded() {
    let s = load(&[]).expect("defaults load");
    assert_eq!(s.port, 3000);
    assert_eq!(s.bind_address.to_string(), "0.0.0.0");
    assert_eq!(s.log.format, LogFormat::Text);
    assert_eq!(s.cors, CorsPolicy::LocalhostOnly);
    assert_eq!(s.socketio.ping_interval, Duration::from_secs(25));
    assert_eq!(s.socketio.ping_timeout, Duration::from_secs(20));
    assert_eq!(s.limits.max_ws_message_bytes, 1_000_000);
    assert_eq!(s.limits.max_http_payload_bytes, 1_000_000);
    assert_eq!(s.shutdown.drain_timeout, Duration::from_secs(25));
    assert!(s.instance_id.starts_with("ecos-"), "{}", s.instance_id);
    assert!(s.redis.url.is_none());
    assert_eq!(s.listen_backlog, 1024);
    assert_eq!(s.runtime.worker_threads, 0, "one worker per CPU");
    assert!(s.runtime.effective_worker_threads() >= 1);
}

#[test]
fn file_then_ecos_env_then_platform_port_each_override_the_last() {
    let file = toml_file(
        "port = 4000\n[log]\nformat = \"json\"\nlevel = \"debug\"\n[socketio]\nping_interval_secs = 10\n",
    );
    let from_file = Settings::load(&Sources {
        file: Some(file.0.clone()),
        env: env(&[]),
    })
    .expect("file");
    assert_eq!(from_file.port, 4000);
    assert_eq!(from_file.log.format, LogFormat::Json);
    assert_eq!(from_file.log.level, "debug");
    assert_eq!(from_file.socketio.ping_interval, Duration::from_secs(10));

    let with_env = Settings::load(&Sources {
        file: Some(file.0.clone()),
        env: env(&[
            ("ECOS_PORT", "5000"),
            ("ECOS_SOCKETIO__PING_INTERVAL_SECS", "0.3"),
        ]),
    })
    .expect("env");
    assert_eq!(with_env.port, 5000);
    assert_eq!(with_env.socketio.ping_interval, Duration::from_millis(300));
    assert_eq!(
        with_env.log.format,
        LogFormat::Json,
        "untouched keys keep the file's value"
    );

    let with_port = Settings::load(&Sources {
        file: Some(file.0.clone()),
        env: env(&[("ECOS_PORT", "5000"), ("PORT", "6000")]),
    })
    .expect("PORT");
    assert_eq!(with_port.port, 6000);
}

#[test]
fn dyno_wins_over_the_configured_instance_id() {
    assert_eq!(
        load(&[("ECOS_INSTANCE_ID", "mine")])
            .expect("ok")
            .instance_id,
        "mine"
    );
    let s = load(&[("ECOS_INSTANCE_ID", "mine"), ("DYNO", "web.3")]).expect("ok");
    assert_eq!(s.instance_id, "web.3");
}

#[test]
fn redis_settings_follow_the_platform() {
    let s = load(&[
        ("REDIS_URL", "rediss://:pw@h:6380"),
        ("ECOS_REDIS__TLS_INSECURE", "true"),
    ])
    .expect("ok");
    assert_eq!(s.redis.url.as_deref(), Some("rediss://:pw@h:6380"));
    assert!(s.redis.tls_insecure);
    assert_eq!(s.redis.prefix, "ecos");
    assert_eq!(
        load(&[("HEROKU_APP_NAME", "chat-prod")])
            .expect("ok")
            .redis
            .prefix,
        "ecos-chat-prod"
    );
    let s = load(&[
        ("HEROKU_APP_NAME", "chat-prod"),
        ("ECOS_REDIS__PREFIX", "mine"),
    ])
    .expect("ok");
    assert_eq!(s.redis.prefix, "mine");
    assert!(
        !load(&[]).expect("ok").redis.tls_insecure,
        "verification stays on by default"
    );
}

#[test]
fn the_emitter_listener_follows_redis_unless_told_otherwise() {
    let without_redis = load(&[]).expect("ok");
    assert_eq!(without_redis.emitter.enabled, EmitterMode::Auto);
    assert_eq!(without_redis.emitter.prefix, "socket.io");
    assert!(
        !without_redis
            .emitter
            .active(without_redis.redis.url.is_some())
    );
    let with_redis = load(&[("REDIS_URL", "redis://h:6379")]).expect("ok");
    assert!(with_redis.emitter.active(with_redis.redis.url.is_some()));
    let off = load(&[
        ("REDIS_URL", "redis://h:6379"),
        ("ECOS_EMITTER__ENABLED", "false"),
    ])
    .expect("ok");
    assert!(!off.emitter.active(true));
    let mine = load(&[
        ("REDIS_URL", "redis://h:6379"),
        ("ECOS_EMITTER__PREFIX", "backend"),
    ])
    .expect("ok");
    assert_eq!(mine.emitter.prefix, "backend");

    // (environment, key named in the error, expected form named in the error)
    type Rejected<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Rejected] = &[
        (
            &[("ECOS_EMITTER__ENABLED", "true")],
            "`emitter.enabled`",
            "while `redis.url` is unset",
        ),
        (
            &[("ECOS_EMITTER__ENABLED", "sometimes")],
            "`emitter.enabled`",
            "`auto`, `true` or `false`",
        ),
        (
            &[("ECOS_EMITTER__PREFIX", "a b")],
            "`emitter.prefix`",
            "without `#` or spaces",
        ),
        (
            &[
                ("REDIS_URL", "redis://h:6379"),
                ("ECOS_REDIS__PREFIX", "same"),
                ("ECOS_EMITTER__PREFIX", "same"),
            ],
            "`emitter.prefix`",
            "other than `redis.prefix`",
        ),
        (
            &[
                ("REDIS_URL", "redis://h:6379"),
                ("ECOS_REDIS__PREFIX", "app"),
                ("ECOS_EMITTER__PREFIX", "app-request"),
            ],
            "`emitter.prefix`",
            "other than `redis.prefix`",
        ),
    ];
    for (pairs, key, expected) in cases {
        let message = load(pairs).expect_err("must be rejected").to_string();
        assert!(message.contains(key), "{pairs:?}: {message}");
        assert!(message.contains(expected), "{pairs:?}: {message}");
    }
    // Without Redis the listener is off, so its prefix cannot clash.
    load(&[
        ("ECOS_REDIS__PREFIX", "same"),
        ("ECOS_EMITTER__PREFIX", "same"),
    ])
    .expect("no clash while the listener is off");
}

#[test]
fn readiness_ignores_redis_unless_told_to_require_it() {
    assert!(!load(&[]).expect("ok").readiness.require_redis);
    let s = load(&[("ECOS_READINESS__REQUIRE_REDIS", "true")]).expect("ok");
    assert!(s.readiness.require_redis);
    let file = toml_file("[readiness]\nrequire_redis = true\n");
    let s = Settings::load(&Sources {
        file: Some(file.0.clone()),
        env: HashMap::new(),
    })
    .expect("ok");
    assert!(s.readiness.require_redis);
    let err = load(&[("ECOS_READINESS__REQUIRE_REDIS", "sometimes")])
        .expect_err("not a boolean")
        .to_string();
    assert!(err.contains("`readiness.require_redis`"), "{err}");
}

#[test]
fn cors_origins_parse_into_a_policy() {
    let list = load(&[(
        "ECOS_CORS__ALLOWED_ORIGINS",
        "https://a.example.com, https://b.example.com/",
    )])
    .expect("ok");
    assert_eq!(
        list.cors,
        CorsPolicy::List(vec![
            "https://a.example.com".into(),
            "https://b.example.com".into()
        ])
    );
    assert_eq!(
        load(&[("ECOS_CORS__ALLOWED_ORIGINS", "*")])
            .expect("ok")
            .cors,
        CorsPolicy::Any
    );
}

#[test]
fn rust_log_is_used_unless_ecos_sets_a_level() {
    assert_eq!(
        load(&[("RUST_LOG", "warn,ecos=debug")])
            .expect("ok")
            .log
            .level,
        "warn,ecos=debug"
    );
    let s = load(&[("RUST_LOG", "warn"), ("ECOS_LOG__LEVEL", "info")]).expect("ok");
    assert_eq!(s.log.level, "info");
}

#[test]
fn every_bad_value_names_the_key_the_value_and_the_expected_form() {
    // (environment, key named in the message, expected form named in the message)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            &[("PORT", "abc")],
            "`port` (from PORT)",
            "integer from 0 to 65535",
        ),
        (
            &[("ECOS_PORT", "70000")],
            "`port`",
            "integer from 0 to 65535",
        ),
        (
            &[("ECOS_BIND_ADDRESS", "localhost:3")],
            "`bind_address`",
            "IP address",
        ),
        (
            &[("ECOS_LOG__FORMAT", "xml")],
            "`log.format`",
            "`text` or `json`",
        ),
        (
            &[("ECOS_LOG__LEVEL", "info,[[")],
            "`log.level`",
            "RUST_LOG-style filter",
        ),
        (
            &[("ECOS_SOCKETIO__PING_TIMEOUT_SECS", "-1")],
            "`socketio.ping_timeout_secs`",
            "seconds greater than 0",
        ),
        (
            &[("ECOS_SOCKETIO__PING_INTERVAL_SECS", "soon")],
            "`socketio.ping_interval_secs`",
            "seconds",
        ),
        (
            &[("ECOS_SHUTDOWN__DRAIN_TIMEOUT_SECS", "0")],
            "`shutdown.drain_timeout_secs`",
            "greater than 0",
        ),
        (
            &[("ECOS_SHUTDOWN__DELAY_SECS", "30")],
            "`shutdown.delay_secs`",
            "less than shutdown.drain_timeout_secs",
        ),
        (
            &[("ECOS_LIMITS__MAX_WS_MESSAGE_BYTES", "0")],
            "`limits.max_ws_message_bytes`",
            "greater than 0",
        ),
        (
            &[("ECOS_LIMITS__MAX_HTTP_PAYLOAD_BYTES", "1MB")],
            "`limits.max_http_payload_bytes`",
            "whole number",
        ),
        (
            &[("ECOS_SOCKETIO__MAX_BUFFER_PACKETS", "-5")],
            "`socketio.max_buffer_packets`",
            "whole number",
        ),
        (
            &[("ECOS_LISTEN_BACKLOG", "0")],
            "`listen_backlog`",
            "from 1 to 65535",
        ),
        (
            &[("ECOS_LISTEN_BACKLOG", "100000")],
            "`listen_backlog`",
            "from 1 to 65535",
        ),
        (
            &[("ECOS_RUNTIME__WORKER_THREADS", "many")],
            "`runtime.worker_threads`",
            "from 0 (one per CPU) to 1024",
        ),
        (
            &[("ECOS_RUNTIME__WORKER_THREADS", "5000")],
            "`runtime.worker_threads`",
            "from 0 (one per CPU) to 1024",
        ),
        (
            &[("ECOS_CORS__ALLOWED_ORIGINS", "example.com")],
            "`cors.allowed_origins`",
            "origins such as",
        ),
        (
            &[("ECOS_INSTANCE_ID", "has space")],
            "`instance_id`",
            "at most 64 characters",
        ),
        (
            &[("REDIS_URL", "http://u:hunter2@h")],
            "`redis.url`",
            "redis://host:6379 or rediss://",
        ),
        (
            &[("REDIS_URL", "redis://u:hunter2@h:notaport")],
            "`redis.url`",
            "redis://host:6379",
        ),
        (
            &[("ECOS_REDIS__TLS_INSECURE", "maybe")],
            "`redis.tls_insecure`",
            "`true` or `false`",
        ),
        (
            &[("ECOS_REDIS__PREFIX", "a#b")],
            "`redis.prefix`",
            "without `#`",
        ),
        (
            &[("ECOS_REDIS__COMMAND_TIMEOUT_SECS", "0")],
            "`redis.command_timeout_secs`",
            "greater than 0",
        ),
    ];
    for (pairs, key, expected) in cases {
        let message = load(pairs).expect_err("must be rejected").to_string();
        assert!(message.contains(key), "{pairs:?}: {message}");
        assert!(message.contains(expected), "{pairs:?}: {message}");
        assert!(
            !message.contains("hunter2"),
            "secrets never appear in errors: {message}"
        );
    }
}

#[test]
fn a_missing_or_broken_file_is_reported_with_its_path() {
    let missing = Settings::load(&Sources {
        file: Some("/nonexistent/ecos.toml".into()),
        env: env(&[]),
    });
    let message = missing.expect_err("missing file").to_string();
    assert!(message.contains("/nonexistent/ecos.toml"), "{message}");

    let broken = toml_file("port = = 3\n");
    let message = Settings::load(&Sources {
        file: Some(broken.0.clone()),
        env: env(&[]),
    })
    .expect_err("broken file")
    .to_string();
    assert!(
        message.contains(&broken.0.display().to_string()),
        "{message}"
    );
}

#[test]
fn print_config_masks_the_redis_password() {
    let s = load(&[("REDIS_URL", "rediss://user:hunter2@redis.example.com:6380")]).expect("ok");
    let shown = s.to_display_string();
    assert!(
        shown.contains("redis.url = \"rediss://user:****@redis.example.com:6380\""),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"));
    // Printed keys are the keys a file accepts.
    assert!(
        shown.contains("socketio.ping_interval_secs = 25"),
        "{shown}"
    );
}

fn ecos_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ecos"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[test]
fn the_binary_refuses_bad_config_with_exit_2_and_one_clear_line() {
    let output = ecos_binary().env("PORT", "abc").output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr.trim(),
        "ecos: invalid value for `port` (from PORT): \"abc\"; expected an integer from 0 to 65535"
    );
}

#[test]
fn the_binary_prints_help_and_the_effective_config() {
    let help = ecos_binary().arg("--help").output().expect("runs");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for option in ["--config", "--print-config", "ECOS_", "PORT"] {
        assert!(text.contains(option), "help mentions {option}: {text}");
    }

    let file = toml_file("[log]\nformat = \"json\"\n");
    let printed = ecos_binary()
        .arg("--print-config")
        .arg("--config")
        .arg(&file.0)
        .env("ECOS_PORT", "4321")
        .output()
        .expect("runs");
    assert!(printed.status.success());
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(text.contains("port = 4321"), "{text}");
    assert!(text.contains("log.format = \"json\""), "{text}");
}

/// `--help` lists every setting from the key table, with its variables and
/// default, and points to the README for what each does; `-h` says where to look.
#[test]
fn help_lists_every_setting_and_points_to_the_readme() {
    let help = ecos_binary().arg("--help").output().expect("runs");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("README.md"), "{text}");
    for key in ecos::config::keys::KEYS {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} ", key.name)))
            .unwrap_or_else(|| panic!("--help lists {}: {text}", key.name));
        assert!(line.contains(&key.env_var()), "{line}");
        if let Some(var) = key.platform_var {
            assert!(line.contains(var), "{line}");
        }
    }
    let port = text
        .lines()
        .find(|l| l.trim_start().starts_with("port "))
        .expect("port");
    assert!(port.trim_end().ends_with("3000"), "default shown: {port}");
    let unset = text
        .lines()
        .find(|l| l.trim_start().starts_with("redis.url "))
        .expect("redis.url");
    assert!(
        unset.trim_end().ends_with("(unset)"),
        "markup stripped: {unset}"
    );

    let short = ecos_binary().arg("-h").output().expect("runs");
    assert!(short.status.success());
    let text = String::from_utf8_lossy(&short.stdout);
    assert!(
        text.contains("ecos --help") && text.contains("README.md"),
        "{text}"
    );
}

/// The README's configuration table is generated from the key table; this
/// fails when either changed alone. `UPDATE_README=1` rewrites the README's copy.
#[test]
fn the_readme_configuration_table_is_the_key_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let header = "| key | env | default | meaning |";
    let start = readme
        .find(header)
        .expect("the README has a configuration table");
    let end = readme[start..]
        .find("\n\n")
        .map_or(readme.len(), |n| start + n + 1);
    let documented = &readme[start..end];
    let generated = ecos::config::keys::markdown_table();
    if documented != generated && std::env::var_os("UPDATE_README").is_some() {
        let updated = format!("{}{generated}{}", &readme[..start], &readme[end..]);
        std::fs::write(path, updated).expect("rewrite README.md");
        return;
    }
    assert_eq!(
        documented, generated,
        "README.md's configuration table differs from src/config/keys.rs; \
         run `UPDATE_README=1 cargo test --test api readme` after changing a key"
    );
}

#[test]
fn an_unknown_ecos_variable_stops_loading_and_names_the_closest_key() {
    let message = load(&[("ECOS_SOCKETIO__PING_INTERVAL", "5")])
        .expect_err("a misspelled key is refused")
        .to_string();
    assert_eq!(
        message,
        "unknown setting ECOS_SOCKETIO__PING_INTERVAL (in the environment); \
         did you mean `socketio.ping_interval_secs`?"
    );
    let message = load(&[("ECOS_PROT", "1")])
        .expect_err("refused")
        .to_string();
    assert!(message.contains("ECOS_PROT"), "{message}");
    assert!(message.contains("did you mean `port`?"), "{message}");
    // Nothing close: the name alone.
    let message = load(&[("ECOS_ZZZZZZZZZZZZ", "1")])
        .expect_err("refused")
        .to_string();
    assert_eq!(
        message,
        "unknown setting ECOS_ZZZZZZZZZZZZ (in the environment)"
    );
    // The documented non-setting variable stays allowed.
    let file = toml_file("port = 4001\n");
    let with_config = Settings::load(&Sources {
        file: Some(file.0.clone()),
        env: env(&[("ECOS_CONFIG", "/elsewhere.toml")]),
    })
    .expect("ECOS_CONFIG is not a setting but is allowed");
    assert_eq!(with_config.port, 4001);
}

#[test]
fn an_unknown_key_in_the_file_stops_loading_and_names_the_file_and_the_closest_key() {
    let file = toml_file("prot = 4000\n");
    let message = Settings::load(&Sources {
        file: Some(file.0.clone()),
        env: env(&[]),
    })
    .expect_err("a misspelled key is refused")
    .to_string();
    assert!(
        message.starts_with("unknown setting `prot` (in "),
        "{message}"
    );
    assert!(message.contains(&file.0.display().to_string()), "{message}");
    assert!(message.ends_with("did you mean `port`?"), "{message}");

    let file = toml_file("[socketio]\nping_interval = 5\n");
    let message = Settings::load(&Sources {
        file: Some(file.0.clone()),
        env: env(&[]),
    })
    .expect_err("refused")
    .to_string();
    assert!(
        message.contains("`socketio.ping_interval`")
            && message.contains("did you mean `socketio.ping_interval_secs`?"),
        "{message}"
    );
}

#[test]
fn the_binary_refuses_an_unknown_variable_with_exit_2_and_one_line() {
    let output = ecos_binary()
        .env("ECOS_SOCKETIO__PING_INTERVAL", "5")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end(),
        "ecos: unknown setting ECOS_SOCKETIO__PING_INTERVAL (in the environment); \
         did you mean `socketio.ping_interval_secs`?"
    );
}

#[test]
fn print_config_leaves_a_generated_instance_id_out() {
    let s = load(&[]).expect("defaults");
    let shown = s.to_display_string();
    assert!(
        shown.contains("# instance_id is generated at start-up"),
        "{shown}"
    );
    assert!(!shown.contains("\ninstance_id ="), "{shown}");
    let pinned = load(&[("ECOS_INSTANCE_ID", "web-7")]).expect("ok");
    assert!(
        pinned
            .to_display_string()
            .contains("instance_id = \"web-7\"")
    );
}
