//! A small app for crash tests: `Steps/run` journals `n` slow steps, each appending a line to
//! the file named by `STEPS_FILE`, so a test can kill the process mid-invocation and count
//! what ran; `Steps/crash` and `Steps/stumble` take the process down themselves. `Waits` and `Approval` wait (a sleep, a call, a promise) so that tests can race
//! wake-ups against suspensions and kill the process after a resume.

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Steps;

fn append(line: &str) -> std::io::Result<()> {
    let path = std::env::var("STEPS_FILE").map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write: with `O_APPEND` it lands whole, never interleaved with another handler's
    // line (`writeln!` writes the line and its newline separately).
    file.write_all(format!("{line}\n").as_bytes())?;
    file.sync_all()
}

fn step_delay() -> Duration {
    let ms = std::env::var("STEP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    Duration::from_millis(ms)
}

#[service]
impl Steps {
    /// Runs `n` steps; returns how many ran.
    #[handler]
    async fn run(&self, ctx: Context<'_>, n: u32) -> HandlerResult<u32> {
        append(&format!("start {}", ctx.invocation_id()))?;
        for i in 0..n {
            ctx.run(|| async move {
                tokio::time::sleep(step_delay()).await;
                append(&format!("step-{i}"))?;
                Ok(())
            })
            .name(format!("step-{i}"))
            .await?;
        }
        Ok(n)
    }

    /// Fails every attempt (a dependency that is down), an hour between attempts.
    #[handler(retry(initial_interval = "1h", max_interval = "1h"))]
    async fn down(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Err("the bank is down".into())
    }

    /// Fails every attempt, each logged as `refused <id> <ms since the epoch>`: three
    /// attempts four seconds apart, then paused.
    #[handler(retry(max_attempts = 3, initial_interval = "4s", max_interval = "4s"))]
    async fn refused(&self, ctx: Context<'_>) -> HandlerResult<()> {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(std::io::Error::other)?
            .as_millis();
        append(&format!("refused {} {at}", ctx.invocation_id()))?;
        Err("the card is refused".into())
    }

    /// Takes the process down in every attempt, as a handler that overflows its stack or
    /// aborts does (at once, without core files), each attempt logged as `crash <id>`: after
    /// a first step, so that the invocation is durable by then.
    #[handler]
    async fn crash(&self, ctx: Context<'_>) -> HandlerResult<()> {
        ctx.run(|| async { Ok(()) }).name("before").await?;
        append(&format!("crash {}", ctx.invocation_id()))?;
        std::process::exit(134)
    }

    /// Journals `n` steps, taking the process down right after each step that ran in this
    /// process: each attempt gets one step further than the one before.
    #[handler]
    async fn stumble(&self, ctx: Context<'_>, n: u32) -> HandlerResult<u32> {
        for i in 0..n {
            let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = ran.clone();
            ctx.run(move || {
                let flag = flag.clone();
                async move {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok(())
                }
            })
            .name(format!("step-{i}"))
            .await?;
            if ran.load(std::sync::atomic::Ordering::SeqCst) {
                append(&format!("stumble {} {i}", ctx.invocation_id()))?;
                std::process::exit(134);
            }
        }
        Ok(n)
    }
}

#[derive(Default)]
pub struct Waits;

#[service]
impl Waits {
    /// Sleeps durably for `ms` milliseconds; returns `ms`.
    #[handler]
    async fn nap(&self, ctx: Context<'_>, ms: u64) -> HandlerResult<u64> {
        ctx.sleep(Duration::from_millis(ms)).await?;
        Ok(ms)
    }

    /// Appends `marked <tag>` to `STEPS_FILE`.
    #[handler]
    async fn mark(&self, ctx: Context<'_>, tag: String) -> HandlerResult<()> {
        let line = format!("marked {tag}");
        ctx.run(|| async { Ok(append(&line)?) })
            .name("mark")
            .await?;
        Ok(())
    }

    /// Sleeps durably for 1.5 s, then appends `later <tag>` to `STEPS_FILE` in a step.
    #[handler]
    async fn later(&self, ctx: Context<'_>, tag: String) -> HandlerResult<()> {
        ctx.sleep(Duration::from_millis(1500)).await?;
        let line = format!("later {tag}");
        ctx.run(|| async { Ok(append(&line)?) })
            .name("later")
            .await?;
        Ok(())
    }

    /// Sends `mark(tag)` delayed by 400 ms and cancels it at once; returns its invocation id.
    #[handler]
    async fn cancel_later(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let marking = ctx
            .client::<Waits>()
            .mark(tag)
            .send_after(Duration::from_millis(400));
        ctx.cancel(marking);
        Ok(marking.invocation_id().to_string())
    }

    /// Calls `Waits/busy(ms)` and returns its answer plus one.
    #[handler]
    async fn call(&self, ctx: Context<'_>, ms: u64) -> HandlerResult<u64> {
        let answer = ctx.client::<Waits>().busy(ms).call().await?;
        Ok(answer + 1)
    }

    /// Holds `payload` in memory for `STEP_MS` (not durably); returns its length.
    #[handler]
    async fn hold(&self, _ctx: Context<'_>, payload: String) -> HandlerResult<u64> {
        tokio::time::sleep(step_delay()).await;
        Ok(payload.len() as u64)
    }

    /// Returns `payload`.
    #[handler]
    async fn echo(&self, _ctx: Context<'_>, payload: String) -> HandlerResult<String> {
        Ok(payload)
    }

    /// Works (not durably) for `ms` milliseconds; returns `ms`.
    #[handler]
    async fn busy(&self, _ctx: Context<'_>, ms: u64) -> HandlerResult<u64> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }
}

/// `run` waits for the `go` promise, then runs one slow step (`STEP_MS`) that appends
/// `step <key>` to `STEPS_FILE` when it starts; `approve` resolves the promise.
#[derive(Default)]
pub struct Approval;

#[workflow]
impl Approval {
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>) -> HandlerResult<String> {
        let note: String = ctx.promise("go").await?;
        let key = ctx.key().to_owned();
        let key = &key;
        ctx.run(|| async move {
            append(&format!("step {key}"))?;
            tokio::time::sleep(step_delay()).await;
            Ok(())
        })
        .name("slow step")
        .await?;
        Ok(format!("approved: {note}"))
    }

    #[handler]
    async fn approve(&self, ctx: SharedWorkflowContext<'_>, note: String) -> HandlerResult<()> {
        ctx.resolve_promise("go", note).await?;
        Ok(())
    }
}

/// Sleeps on its key: holds the key for as long as it waits.
#[derive(Default)]
pub struct Naps;

#[object]
impl Naps {
    #[handler]
    async fn nap(&self, ctx: ObjectContext<'_>, ms: u64) -> HandlerResult<u64> {
        ctx.sleep(Duration::from_millis(ms)).await?;
        Ok(ms)
    }
}

/// `append(n)` runs one slow step (`STEP_MS`) that appends `ledger <key> <n>` to `STEPS_FILE`
/// when it starts, so a test sees the order in which a key's invocations ran.
#[derive(Default)]
pub struct Ledger;

#[object]
impl Ledger {
    #[handler]
    async fn append(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
        let key = ctx.key().to_owned();
        let key = &key;
        ctx.run(|| async move {
            append(&format!("ledger {key} {n}"))?;
            tokio::time::sleep(step_delay()).await;
            Ok(())
        })
        .name("entry")
        .await?;
        Ok(n)
    }
}

/// A per-key counter: the side effect chaos tests count (exactly once per acknowledged add).
#[derive(Default)]
pub struct Tally;

#[object]
impl Tally {
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
        let count = ctx.get::<u64>("count").await?.unwrap_or(0) + n;
        ctx.set("count", count);
        Ok(count)
    }

    /// Adds like `add`, then holds the key through a slow step (`STEP_MS`) that announces
    /// itself as `slow <key> <count>` once the new count is durable.
    #[handler]
    async fn slow_add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
        let count = ctx.get::<u64>("count").await?.unwrap_or(0) + n;
        ctx.set("count", count);
        // A step's result is durable before the handler goes on, and the write before it.
        ctx.run(|| async { Ok(()) }).name("written").await?;
        let line = format!("slow {} {count}", ctx.key());
        ctx.run(|| async {
            append(&line)?;
            tokio::time::sleep(step_delay()).await;
            Ok(())
        })
        .name("slow")
        .await?;
        Ok(count)
    }

    #[handler]
    async fn get(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<u64> {
        Ok(ctx.get::<u64>("count").await?.unwrap_or(0))
    }
}

/// `mix(i)` uses every primitive once: a call, a send and a delayed send (each adding 1 to
/// `Tally/{i % 8}`), a sleep, an awakeable resolved by another handler, an attach, a select, a
/// cancel, state (through `Tally`); it returns `i` plus the call's answer. `await_http(tag)`
/// waits for an awakeable resolved over HTTP, whose id it appends to `STEPS_FILE` as
/// `awakeable <tag> <id>`.
#[derive(Default)]
pub struct Chaos;

#[service]
impl Chaos {
    #[handler]
    async fn mix(&self, ctx: Context<'_>, i: u64) -> HandlerResult<u64> {
        let tally = ctx.object::<Tally>((i % 8).to_string());
        tally.add(1).send();
        tally.add(1).send_after(Duration::from_millis(20));
        let waits = ctx.client::<Waits>();
        let answer = waits.busy(2 + i % 3).call().await?;
        ctx.sleep(Duration::from_millis(3 + i % 5)).await?;
        let (id, resolved) = ctx.awakeable::<u64>();
        ctx.client::<Chaos>().resolve(id).send();
        let resolved = resolved.await?;
        let attached = ctx.attach::<u64>(waits.busy(1).send()).await?;
        let raced = match ctx
            .select(ctx.sleep(Duration::from_secs(3600)), waits.busy(1).call())
            .await
        {
            restate_runtime::Either::Left(_) => {
                return Err(TerminalError::new("the hour passed").into());
            }
            restate_runtime::Either::Right(v) => v?,
        };
        let doomed = waits.nap(3_600_000).send();
        ctx.cancel(doomed);
        match ctx.attach::<u64>(doomed).await {
            Err(e) if e.code() == 409 => {}
            other => return Err(TerminalError::new(format!("not cancelled: {other:?}")).into()),
        }
        Ok(i + answer + resolved + attached + raced + combined(&ctx, &waits).await?)
    }

    /// Resolves awakeable `id` with 1000.
    #[handler]
    async fn resolve(&self, ctx: Context<'_>, id: String) -> HandlerResult<()> {
        ctx.awakeable_handle(id).resolve(1000u64).await?;
        Ok(())
    }

    #[handler]
    async fn await_http(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let (id, resolved) = ctx.awakeable::<String>();
        let line = format!("awakeable {tag} {id}");
        ctx.run(|| async { Ok(append(&line)?) })
            .name("announce")
            .await?;
        Ok(resolved.await?)
    }
}

/// `journey(tag)` makes one step of each kind, for the traces test: a run, a call, a send, a
/// sleep of `STEP_MS` (it suspends there), an awakeable whose id it appends to `STEPS_FILE` as
/// `traced <tag> <id>` (it waits there until resolved over HTTP), then one more run.
#[derive(Default)]
pub struct Traced;

#[service]
impl Traced {
    #[handler]
    async fn journey(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        ctx.run(|| async { Ok(()) }).name("before").await?;
        let waits = ctx.client::<Waits>();
        waits.busy(1).call().await?;
        waits.busy(2).send();
        ctx.sleep(step_delay()).await?;
        let (id, resolved) = ctx.awakeable::<String>();
        let line = format!("traced {tag} {id}");
        ctx.run(|| async { Ok(append(&line)?) })
            .name("announce")
            .await?;
        let value = resolved.await?;
        ctx.run(|| async { Ok(()) }).name("after").await?;
        Ok(value)
    }
}

/// The n-ary combinators and typed handles, each decision journaled: `all` (1 + 2), `race`
/// (3 either way), `unordered` (1 + 2), an `or_timeout` that times out (1), and a handle's
/// `attach` and `output` (1 each): 12 in all. An output right after a send must not fail.
async fn combined(ctx: &Context<'_>, waits: &WaitsClient<'_>) -> HandlerResult<u64> {
    let both: u64 = ctx
        .all([waits.busy(1).call(), waits.busy(2).call()])
        .await?
        .iter()
        .sum();
    let (_, fastest) = ctx.race([waits.busy(3).call(), waits.busy(3).call()]).await;
    let mut stream = ctx.unordered([waits.busy(1).call(), waits.nap(2).call()]);
    let mut streamed = 0;
    while let Some((_, value)) = stream.next().await {
        streamed += value?;
    }
    // An attach bounded by `or_timeout` (the timer wins), its target then cancelled.
    let long = waits.nap(3_600_000).send();
    let timed_out = match long.attach().or_timeout(Duration::from_millis(5)).await {
        Err(e) if e.code() == 408 => 1,
        other => return Err(TerminalError::new(format!("no timeout: {other:?}")).into()),
    };
    long.cancel();
    // A handle: attach (an entry completed by the job) and output (its result, journaled).
    let job = waits.busy(1).send();
    let attached = job.attach().await?;
    let seen = job.output().await?.unwrap_or(0);
    // An output right after a send, wherever the job's partition runs: not ready yet, or
    // done, never unknown.
    match waits.busy(1).send().output().await? {
        None | Some(1) => {}
        other => return Err(TerminalError::new(format!("early output: {other:?}")).into()),
    }
    Ok(both + fastest? + streamed + timed_out + attached + seen)
}

/// At most two at a time: each run appends `gated start <n> <pid>`, works `STEP_MS`, then
/// appends `gated end <n> <pid>` to `STEPS_FILE`, so a test sees how many ran at once. And a
/// rate-limited handler, whose runs a test times.
#[derive(Default)]
pub struct Gated;

#[service]
impl Gated {
    #[handler(concurrency = 2)]
    async fn work(&self, ctx: Context<'_>, n: u32) -> HandlerResult<u32> {
        ctx.run(|| async move {
            let pid = std::process::id();
            append(&format!("gated start {n} {pid}"))?;
            tokio::time::sleep(step_delay()).await;
            append(&format!("gated end {n} {pid}"))?;
            Ok(())
        })
        .name("work")
        .await?;
        Ok(n)
    }

    /// At most 20 a second: each run appends `rated <n> <unix ms>`.
    #[handler(rate(limit = 20, per = "1s"))]
    async fn rated(&self, ctx: Context<'_>, n: u32) -> HandlerResult<u32> {
        ctx.run(|| async move {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis();
            append(&format!("rated {n} {ms}"))?;
            Ok(())
        })
        .name("rated")
        .await?;
        Ok(n)
    }
}

impl Gated {
    /// A debounced arrival's key: its first element.
    fn burst(arrival: &(String, u32)) -> &str {
        &arrival.0
    }
}

/// Debounced per key: once a key's arrivals `[key, n]` have stopped for 3 s, runs once with the
/// last of them and appends `settled <key> <n> <pid>` to `STEPS_FILE`.
#[derive(Default)]
pub struct Settle;

#[service]
impl Settle {
    #[handler(debounce(key = Gated::burst, period = "3s", max_wait = "20s"))]
    async fn burst(&self, ctx: Context<'_>, arrival: (String, u32)) -> HandlerResult<u32> {
        let line = format!("settled {} {} {}", arrival.0, arrival.1, std::process::id());
        ctx.run(|| {
            let line = line.clone();
            async move { Ok(append(&line)?) }
        })
        .name("settled")
        .await?;
        Ok(arrival.1)
    }
}

/// The target of a schedule in the crash tests: counts each tick it is given in journaled
/// state, so a tick that ran twice counts 2 and one that never ran is missing.
#[derive(Default)]
pub struct Ticks;

#[object]
impl Ticks {
    #[handler]
    async fn add(
        &self,
        ctx: ObjectContext<'_>,
        tick: restate_runtime::ScheduledTime,
    ) -> HandlerResult<()> {
        let name = tick.to_string();
        let seen = ctx.get::<u32>(&name).await?.unwrap_or(0);
        ctx.set(&name, seen + 1);
        Ok(())
    }

    /// Every tick seen, with its count.
    #[handler]
    async fn counts(
        &self,
        ctx: SharedObjectContext<'_>,
    ) -> HandlerResult<std::collections::BTreeMap<String, u32>> {
        let mut counts = std::collections::BTreeMap::new();
        for name in ctx.state_keys().await? {
            counts.insert(name.clone(), ctx.get::<u32>(&name).await?.unwrap_or(0));
        }
        Ok(counts)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    restate_runtime::init_tracing();
    Runtime::builder().build()?.serve().await?;
    Ok(())
}
