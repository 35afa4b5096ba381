//! Registers: single-key reads, writes and compare-and-sets on a few keys at
//! a time (the hot keys move on every couple of seconds, so each key's
//! history stays small enough to check). Every written value is unique.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use super::{Ctx, Endpoint};
use crate::client::{self, describe};
use crate::history::{Op, Record, Status};

pub const PREFIX: &str = "reg/";
const HOT_KEYS: u64 = 4;
const KEY_PERIOD: Duration = Duration::from_secs(2);

pub async fn client(ctx: Arc<Ctx>, client: u64, mut rng: StdRng) {
    let mut ep = Endpoint::new(client, ctx.endpoints.len());
    // Recent values seen per key, to make compare-and-sets that can succeed.
    let mut seen: HashMap<String, Option<u64>> = HashMap::new();
    let started = std::time::Instant::now();
    while ctx.running() {
        let window = started.elapsed().as_millis() as u64 / KEY_PERIOD.as_millis() as u64;
        let key = format!("{PREFIX}{}", window * HOT_KEYS + rng.gen_range(0..HOT_KEYS));
        let node = ep.index;
        let ch = &ctx.endpoints[node];
        let call = ctx.history.now();
        let (op, result) = match rng.gen_range(0..10) {
            0..=3 => match client::get(ch, &key).await {
                Ok((value, _)) => {
                    seen.insert(key.clone(), value);
                    (Op::Read { value }, Ok(()))
                }
                Err(e) => (Op::Read { value: None }, Err(e)),
            },
            4..=6 => {
                let value = ctx.fresh();
                let r = client::put(ch, &key, value).await.map(|_| ());
                (Op::Write { value }, r)
            }
            _ => {
                let from = seen.get(&key).copied().flatten();
                let to = ctx.fresh();
                match client::cas(ch, &key, from, to).await {
                    Ok(swapped) => (
                        Op::Cas {
                            from,
                            to,
                            swapped: Some(swapped),
                        },
                        Ok(()),
                    ),
                    Err(e) => (
                        Op::Cas {
                            from,
                            to,
                            swapped: None,
                        },
                        Err(e),
                    ),
                }
            }
        };
        let ret = ctx.history.now();
        let (status, error) = match result {
            Ok(()) => (Status::Ok, None),
            Err(e) => {
                ep.switch(&mut rng);
                // A read that failed changed nothing, whatever the error.
                let status = if matches!(op, Op::Read { .. }) {
                    Status::Fail
                } else {
                    client::classify(&e)
                };
                (status, Some(describe(&e)))
            }
        };
        if status != Status::Ok {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ctx.history.push(Record {
            client,
            node,
            key,
            op,
            call,
            ret,
            status,
            error,
        });
    }
}
