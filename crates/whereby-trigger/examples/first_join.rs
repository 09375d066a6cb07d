//! The Node SDK's README example in Rust: start an assistant when the first
//! participant joins a room.
//!
//! ```sh
//! WHEREBY_WEBHOOK_SECRET=whsec_dev cargo run -p whereby-trigger --example first_join
//! # in another terminal:
//! WHEREBY_WEBHOOK_SECRET=whsec_dev cargo run -p whereby-trigger -- send room.client.joined
//! ```

use whereby_trigger::Trigger;
use whereby_trigger::webhook::{AssistantRequested, RoomClientJoined};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();

    let mut builder = Trigger::builder()
        .port(8080)
        // The first participant in the room: nobody else is there yet.
        .on(|joined: &RoomClientJoined| joined.data.num_clients == Some(1))
        // A host asked for an assistant from the in-room menu.
        .on(|_: &AssistantRequested| true);
    match std::env::var("WHEREBY_WEBHOOK_SECRET") {
        Ok(secret) => builder = builder.secret(secret),
        Err(_) => eprintln!("WHEREBY_WEBHOOK_SECRET is not set: accepting unsigned webhooks"),
    }
    let trigger = builder.build()?;

    let mut events = trigger.subscribe();
    let handle = trigger.start().await?;
    eprintln!("listening on {}", handle.local_addr());

    let assistants = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            // Here a real program would launch its assistant into the room.
            println!("start an assistant in {}", event.room_url);
        }
    });

    tokio::signal::ctrl_c().await?;
    handle.shutdown().await?;
    assistants.await?;
    Ok(())
}
