//! Webhook settings: what start-up refuses, with the key named, and that the
//! secret never shows. The wire itself is tested with real receivers and the
//! official clients in tests/js/webhooks.test.mjs and tests/python/test_webhooks.py.

use crate::config::load;

const URL: (&str, &str) = (
    "ECOS_WEBHOOKS__URL",
    "https://backend.example.com/ecos/hooks",
);
const SECRET: (&str, &str) = ("ECOS_WEBHOOKS__SECRET", "whsec-never-printed-0123456789");

fn error(pairs: &[(&str, &str)]) -> String {
    load(pairs).expect_err("should be refused").to_string()
}

#[test]
fn every_hook_is_off_by_default_and_the_defaults_are_documented_values() {
    let settings = load(&[]).expect("defaults load");
    let hooks = &settings.webhooks;
    assert!(!hooks.enabled() && !hooks.connect && !hooks.disconnect && hooks.events.is_empty());
    assert_eq!(hooks.timeout, std::time::Duration::from_millis(5000));
    assert_eq!(hooks.max_concurrency, 64);
    assert_eq!(hooks.disconnect_queue, 10_000);
    assert_eq!(hooks.retry_for, std::time::Duration::from_secs(60));
    assert!(!hooks.fail_open);
}

#[test]
fn a_url_needs_its_secret_and_a_hook_and_a_hook_needs_the_url() {
    assert_eq!(
        error(&[URL, ("ECOS_WEBHOOKS__CONNECT", "true")]),
        "`webhooks.url = \"https://backend.example.com/ecos/hooks\"` needs `webhooks.secret`, the key that signs every request"
    );
    assert_eq!(
        error(&[URL, SECRET]),
        "`webhooks.url = \"https://backend.example.com/ecos/hooks\"` needs at least one of `webhooks.connect`, `webhooks.events` or `webhooks.disconnect`"
    );
    assert_eq!(
        error(&[("ECOS_WEBHOOKS__DISCONNECT", "true")]),
        "`webhooks.disconnect = true` needs `webhooks.url`, the backend to call"
    );
    assert_eq!(
        error(&[("ECOS_WEBHOOKS__EVENTS", "order:place")]),
        "`webhooks.events = \"order:place\"` needs `webhooks.url`, the backend to call"
    );
}

#[test]
fn ecos_own_and_reserved_event_names_cannot_be_forwarded() {
    for name in ["join", "room:ask", "welcome", "disconnect", "connect_error"] {
        let events = format!("order:place,{name}");
        let message = error(&[URL, SECRET, ("ECOS_WEBHOOKS__EVENTS", &events)]);
        assert!(
            message.starts_with(&format!("invalid value for `webhooks.events`: \"{name}\"")),
            "{message}"
        );
        assert!(message.contains("cannot be forwarded"), "{message}");
    }
    let settings = load(&[
        URL,
        SECRET,
        (
            "ECOS_WEBHOOKS__EVENTS",
            " order:place , chat:read,order:place ",
        ),
    ])
    .expect("app events are fine");
    assert_eq!(settings.webhooks.events, ["order:place", "chat:read"]);
}

#[test]
fn bad_values_name_the_key_and_the_expected_form() {
    let cases = [
        (
            "ECOS_WEBHOOKS__URL",
            "ftp://backend/hooks",
            "`webhooks.url`",
            "an http:// or https:// URL",
        ),
        (
            "ECOS_WEBHOOKS__URL",
            "not a url",
            "`webhooks.url`",
            "an http:// or https:// URL",
        ),
        (
            "ECOS_WEBHOOKS__TIMEOUT_MS",
            "50",
            "`webhooks.timeout_ms`",
            "from 100 to 60000",
        ),
        (
            "ECOS_WEBHOOKS__MAX_CONCURRENCY",
            "0",
            "`webhooks.max_concurrency`",
            "from 1 to 1024",
        ),
        (
            "ECOS_WEBHOOKS__FORWARD_HEADERS",
            "cookie,bad header",
            "`webhooks.forward_headers`",
            "HTTP header names",
        ),
        (
            "ECOS_WEBHOOKS__CONNECT",
            "yes please",
            "`webhooks.connect`",
            "",
        ),
        (
            "ECOS_WEBHOOKS__RETRY_FOR_SECS",
            "-1",
            "`webhooks.retry_for_secs`",
            "from 0 to 3600",
        ),
    ];
    for (var, value, key, expected) in cases {
        let message = error(&[(var, value)]);
        assert!(
            message.contains(key) && message.contains(expected),
            "{var}={value}: {message}"
        );
    }
}

#[test]
fn the_secret_never_shows_and_header_names_are_lowercased() {
    let settings = load(&[
        URL,
        SECRET,
        ("ECOS_WEBHOOKS__CONNECT", "true"),
        ("ECOS_WEBHOOKS__FORWARD_HEADERS", "Cookie, X-Tenant"),
    ])
    .expect("loads");
    assert_eq!(settings.webhooks.forward_headers, ["cookie", "x-tenant"]);
    let shown = settings.to_display_string();
    assert!(!shown.contains(SECRET.1), "{shown}");
    assert!(!format!("{settings:?}").contains(SECRET.1));
    assert!(shown.contains("# webhooks.secret is set"), "{shown}");
    let message = error(&[URL, ("ECOS_WEBHOOKS__SECRET", "has a space")]);
    assert!(!message.contains("has a space"), "{message}");
}
