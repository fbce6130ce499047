//! A command's JSON body as the gateway reads it: parsed (`body::parse`, which names the field of
//! a type error) and validated into a domain command (`into_command`). The first byte picks the
//! command. Nothing may panic; a command that passes must survive the queue's envelope unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_core::model::{CommandEnvelope, Principal, Role};
use tally_http::body::parse;
use tally_http::dto::*;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let now = jiff::Timestamp::UNIX_EPOCH;
    let command = match kind % 9 {
        0 => parse::<NewSupplier>(body).and_then(|d| d.into_command()),
        1 => parse::<NewStore>(body).and_then(|d| d.into_command()),
        2 => parse::<NewItem>(body).and_then(|d| d.into_command()),
        3 => parse::<NewDelivery>(body).and_then(|d| d.into_command(now)),
        4 => parse::<NewSale>(body).and_then(|d| d.into_command(now)),
        5 => parse::<NewReturn>(body).and_then(|d| d.into_command(now)),
        6 => parse::<NewAdjustment>(body).and_then(|d| d.into_command(now)),
        7 => parse::<VoidSale>(body).and_then(|d| d.into_command("s-1".into(), None, now)),
        _ => parse::<CorrectDelivery>(body).and_then(|d| d.into_command("d-1".into(), None)),
    };
    if let Ok(command) = command {
        let envelope = CommandEnvelope {
            command_id: uuid::Uuid::nil(),
            received_at: now,
            principal: Principal {
                key_id: "key_fuzz".into(),
                role: Role::Admin,
                scope: None,
            },
            correlation_id: None,
            command,
        };
        let back =
            CommandEnvelope::decode(&envelope.encode()).expect("an accepted command decodes");
        assert_eq!(back, envelope);
    }
});
