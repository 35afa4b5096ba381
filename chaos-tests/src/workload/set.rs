//! A grow-only set: each add is a put of a fresh key. At the end every
//! acknowledged add must be in the store, and nothing that was never added.
//! With the restart-all fault this is the kill-all durability check.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;

use super::{Ctx, Endpoint};
use crate::client::{self, describe};
use crate::history::{Op, Record, Status};

pub const PREFIX: &str = "set/";

pub async fn client(ctx: Arc<Ctx>, client: u64, mut rng: StdRng) {
    let mut ep = Endpoint::new(client, ctx.endpoints.len());
    while ctx.running() {
        let value = ctx.fresh();
        let key = format!("{PREFIX}{value:012}");
        let node = ep.index;
        let call = ctx.history.now();
        let result = client::put(&ctx.endpoints[node], &key, value).await;
        let ret = ctx.history.now();
        let (status, error) = match result {
            Ok(_) => (Status::Ok, None),
            Err(e) => {
                ep.switch(&mut rng);
                tokio::time::sleep(Duration::from_millis(20)).await;
                (client::classify(&e), Some(describe(&e)))
            }
        };
        ctx.history.push(Record {
            client,
            node,
            key,
            op: Op::Add { value },
            call,
            ret,
            status,
            error,
        });
    }
}
