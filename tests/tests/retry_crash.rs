//! A restart goes on with an invocation's retries where the killed process left them: the
//! failed attempts count towards `max_attempts` across processes, and the delay before the
//! next attempt is waited out, not cut short by the restart.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{App, lines, poll};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

fn env(steps: &Path) -> Vec<(&'static str, String)> {
    vec![("STEPS_FILE", steps.display().to_string())]
}

/// The admin API's view of one invocation.
async fn view(client: &reqwest::Client, app: &App, id: &str) -> serde_json::Value {
    let url = format!("{}/invocations/{id}", app.admin);
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The times (ms since the epoch) of `id`'s attempts, from the steps file.
fn attempts(steps: &PathBuf, id: &str) -> Vec<u64> {
    let prefix = format!("refused {id} ");
    lines(steps)
        .iter()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|at| at.parse().unwrap())
        .collect()
}

/// Waits until `id` backs off after its `n`th attempt (its failure is durable by then), and
/// returns the time of the next attempt the admin API shows.
async fn backing_off_after(
    client: &reqwest::Client,
    app: &App,
    steps: &PathBuf,
    id: &str,
    n: u64,
) -> String {
    poll(Duration::from_secs(60), || async {
        let v = view(client, app, id).await;
        v["status"] == "backing-off" && v["attempts"] == n
    })
    .await;
    assert_eq!(attempts(steps, id).len() as u64, n);
    let v = view(client, app, id).await;
    v["next_retry_at"].as_str().unwrap().to_owned()
}

/// Three attempts allowed, four seconds apart, the process killed after each of the first two
/// failures: the restart shows the invocation backing off until the time it had, its next
/// attempt comes no sooner, and it is paused after the third attempt in all (found from
/// outside: each restart counted from nought and ran the next attempt at once, so a process
/// restarted often never reached `max_attempts`).
#[tokio::test]
async fn a_restart_goes_on_counting_failed_attempts_and_waits_out_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let steps = dir.path().join("steps.log");
    let client = reqwest::Client::new();
    let mut app = App::start(BIN, &data, &env(&steps)).await;
    let id = {
        let url = format!("{}/Steps/refused/send", app.ingress);
        let r = client.post(url).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        body["invocationId"].as_str().unwrap().to_owned()
    };
    for n in 1..=2 {
        let next = backing_off_after(&client, &app, &steps, &id, n).await;
        app.kill();
        app = App::start(BIN, &data, &env(&steps)).await;
        // Shown backing off once its task is back (unless the machine took the whole delay
        // to restart: then the next attempt may have run).
        poll(Duration::from_secs(60), || async {
            let v = view(&client, &app, &id).await;
            v["status"] == "backing-off" || v["attempts"].as_u64() > Some(n)
        })
        .await;
        let v = view(&client, &app, &id).await;
        if v["attempts"] == n {
            assert_eq!(v["status"], "backing-off", "{v}");
            assert_eq!(v["next_retry_at"], next.as_str(), "{v}");
        }
    }
    poll(Duration::from_secs(60), || async {
        view(&client, &app, &id).await["status"] == "paused"
    })
    .await;
    let times = attempts(&steps, &id);
    assert_eq!(times.len(), 3, "{times:?}");
    let v = view(&client, &app, &id).await;
    assert_eq!(v["attempts"], 3, "{v}");
    let error = v["last_error"].as_str().unwrap();
    assert!(error.contains("after 3 attempts"), "{error}");
    for pair in times.windows(2) {
        assert!(
            pair[1] >= pair[0] + 4_000,
            "an attempt came {} ms after the one before, not after the delay of 4 s",
            pair[1] - pair[0]
        );
    }
}

/// Starts the app on `ports` until a start stays up: each restore of an invocation that takes
/// its process down ends that start. Returns the start that stayed, once `settled` says so of
/// the admin API's view of `id`, and how many starts ended.
async fn restart_until_it_stays(
    client: &reqwest::Client,
    data: &Path,
    env: &[(&'static str, String)],
    ports: (u16, u16),
    id: &str,
    settled: &str,
) -> (App, u32) {
    let mut ended = 0;
    loop {
        assert!(ended <= 6, "{ended} starts in a row ended: a crash loop");
        let mut app = App::launch(BIN, data, env, ports);
        if app.healthy_or_exited().await.is_err() {
            ended += 1;
            continue;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let stays = loop {
            assert!(
                std::time::Instant::now() < deadline,
                "neither {settled} nor ended"
            );
            if app.exited().is_some() {
                break false;
            }
            let seen = client
                .get(format!("{}/invocations/{id}", app.admin))
                .send()
                .await;
            if let Ok(r) = seen
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["status"] == settled
            {
                break true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        if stays {
            return (app, ended);
        }
        ended += 1;
    }
}

/// A process that `Steps/{handler}` (sent `body`, if any) took down, with `max` interrupted attempts
/// allowed: what its restarts need, and the invocation's id (read from the steps file: the
/// send's answer may be lost with the process).
struct TakenDown {
    _dir: tempfile::TempDir,
    data: PathBuf,
    steps: PathBuf,
    env: Vec<(&'static str, String)>,
    ports: (u16, u16),
    id: String,
}

async fn taken_down_by(handler: &str, body: Option<serde_json::Value>, max: &str) -> TakenDown {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let steps = dir.path().join("steps.log");
    let mut env = env(&steps);
    env.push(("RESTATE_MAX_INTERRUPTED_ATTEMPTS", max.into()));
    let ports = (support::free_port(), support::free_port());
    let mut app = App::start_on(BIN, &data, &env, ports).await;
    let send = reqwest::Client::new().post(format!("{}/Steps/{handler}/send", app.ingress));
    let _ = match body {
        Some(body) => send.json(&body),
        None => send,
    }
    .send()
    .await;
    assert!(app.wait_exit(Duration::from_secs(60)).is_some());
    let id = lines(&steps)
        .first()
        .and_then(|line| line.strip_prefix(&format!("{handler} ")))
        .and_then(|rest| rest.split(' ').next())
        .expect("the first attempt ran")
        .to_owned();
    TakenDown {
        _dir: dir,
        data,
        steps,
        env,
        ports,
        id,
    }
}

/// A handler that takes its process down in every attempt (a stack overflow, an abort): with
/// two interrupted attempts allowed, the third restart finds it paused instead of running it
/// again, says why, and serves the rest (found from outside: such a handler took every restart
/// down for ever, and everything else the process ran with it).
#[tokio::test]
async fn an_invocation_that_takes_its_process_down_is_paused_after_the_allowed_restarts() {
    let client = reqwest::Client::new();
    let down = taken_down_by("crash", None, "2").await;
    let (data, env, id) = (&down.data, &down.env, &down.id);
    let (app, ended) = restart_until_it_stays(&client, data, env, down.ports, id, "paused").await;
    // The first attempt is not counted (nothing is written before a fresh one runs), the
    // two after it are.
    assert_eq!(ended, 2);
    let crashes = lines(&down.steps)
        .iter()
        .filter(|l| l.starts_with("crash "))
        .count();
    assert_eq!(crashes, 3);
    let v = view(&client, &app, id).await;
    assert_eq!(v["paused_reason"], "interrupted", "{v}");
    let error = v["last_error"].as_str().unwrap();
    assert!(error.contains("2 attempts in a row"), "{error}");
    let r = client
        .post(format!("{}/Steps/run", app.ingress))
        .json(&1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<u32>().await.unwrap(), 1);
}

/// A handler whose process goes down in each attempt, each attempt a step further than the one
/// before, is not stuck: with one interrupted attempt allowed it is never paused, and it
/// completes once its steps are journaled.
#[tokio::test]
async fn attempts_that_get_further_each_time_are_not_counted_as_a_crash_loop() {
    let client = reqwest::Client::new();
    let down = taken_down_by("stumble", Some(serde_json::json!(3)), "1").await;
    let (data, env, id) = (&down.data, &down.env, &down.id);
    let (app, ended) =
        restart_until_it_stays(&client, data, env, down.ports, id, "completed").await;
    assert_eq!(ended, 2);
    let stumbles = lines(&down.steps)
        .iter()
        .filter(|l| l.starts_with("stumble "))
        .count();
    assert_eq!(stumbles, 3);
    assert_eq!(support::output(&app, id).await, serde_json::json!(3));
}
