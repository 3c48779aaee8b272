//! The type-erased hub (`ecos::hub::Hub`) acting on real sockets: what a
//! server-side caller (the HTTP API to come) can do, whatever the adapter.

use std::time::Duration;

use ecos::{
    Application,
    hub::{Listing, Selector},
    realtime::args::Args,
};
use serde_json::json;

use crate::{
    client::Transport,
    helpers::{spawn_built, test_settings},
};

fn rooms(rooms: &[&str]) -> Selector {
    Selector {
        rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
        ..Selector::default()
    }
}

#[tokio::test]
async fn the_hub_emits_joins_lists_and_disconnects_by_selector() {
    let app = Application::build(test_settings("hub"))
        .await
        .expect("builds");
    let hub = app.hub();
    let app = spawn_built(app).await;
    let mut alice = app.client(Transport::WebSocket).await;
    let mut bob = app.client(Transport::Polling).await;
    alice
        .emit_with_ack("join", vec![json!("team")])
        .await
        .unwrap();

    // To a room: only its member hears it, every argument separately.
    let args = Args(vec![rmpv::Value::from("hello"), rmpv::Value::from(2)]);
    hub.emit(&rooms(&["team"]), "notice", &args)
        .await
        .expect("emits");
    assert_eq!(
        alice.expect_event("notice").await.args,
        vec![json!("hello"), json!(2)]
    );
    bob.assert_no_event("notice", Duration::from_millis(200))
        .await;

    // To everyone except a room.
    let except_team = Selector {
        except: vec!["team".into()],
        ..Selector::default()
    };
    hub.emit(
        &except_team,
        "notice",
        &Args(vec![rmpv::Value::from("others")]),
    )
    .await
    .unwrap();
    assert_eq!(bob.expect_event("notice").await.args, vec![json!("others")]);
    alice
        .assert_no_event("notice", Duration::from_millis(200))
        .await;

    // Everyone joins a room; the listings see it.
    hub.join(&Selector::default(), "all-hands")
        .await
        .expect("joins");
    let listing = hub.rooms().await.expect("lists");
    assert_eq!(
        listing,
        Listing {
            count: 2,
            names: vec!["all-hands".into(), "team".into()]
        }
    );
    let members = hub.sockets(&rooms(&["all-hands"])).await.expect("lists");
    assert_eq!(members.count, 2);
    let ack = bob.emit_with_ack("rooms", vec![]).await.unwrap();
    assert_eq!(ack[0]["rooms"], json!(["all-hands", "team"]));

    hub.leave(&rooms(&["team"]), "all-hands")
        .await
        .expect("leaves");
    assert_eq!(hub.sockets(&rooms(&["all-hands"])).await.unwrap().count, 1);
    assert_eq!(hub.local_socket_count(), 2);
    assert_eq!(hub.status().name, "memory");

    // Disconnect by room: alice goes, bob stays.
    hub.disconnect(&rooms(&["team"]))
        .await
        .expect("disconnects");
    assert!(alice.wait_closed(Duration::from_secs(5)).await || !alice.is_open());
    app.wait_metric(
        r#"ecos_disconnections_total{reason="server_disconnect""#,
        1.0,
    )
    .await;
    assert!(bob.is_open());
    assert_eq!(hub.local_socket_count(), 1);
}
