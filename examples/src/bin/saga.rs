//! A saga: book a trip as three steps (flight, car, hotel) and, when one is refused, undo the
//! ones already done, newest first. Steps and undos are journaled with `ctx.run`, so a crash
//! midway resumes where it stopped: nothing is booked twice, nothing is cancelled twice.
//!
//! ```sh
//! cargo run --bin saga
//! curl -i localhost:8080/Trip/book --json '{"trip_id":"t1"}'
//! curl -i localhost:8080/Trip/book --json '{"trip_id":"t2","fail_on":"hotel"}'
//! # The journal of the failed booking (id from its x-restate-id header): three reservations,
//! # then "cancel car" and "cancel flight".
//! curl localhost:9070/invocations/<x-restate-id>
//! ```

use restate_runtime::prelude::*;

#[derive(Debug, Serialize, Deserialize)]
pub struct TripRequest {
    pub trip_id: String,
    /// The step to refuse ("flight", "car" or "hotel"), to see the compensation.
    #[serde(default)]
    pub fail_on: Option<String>,
}

#[derive(Default)]
pub struct Trip;

#[service]
impl Trip {
    /// Books flight, car and hotel, and returns their confirmation numbers; or books nothing
    /// and fails with the refusal.
    #[handler]
    async fn book(&self, ctx: Context<'_>, req: TripRequest) -> HandlerResult<Vec<String>> {
        let trip = req.trip_id.as_str();
        // What to undo: (step, confirmation) of each step done so far, in order.
        let mut done: Vec<(&str, String)> = Vec::new();
        for step in ["flight", "car", "hotel"] {
            let refused = req.fail_on.as_deref() == Some(step);
            let reserved = ctx
                .run(|| async move { reserve(trip, step, refused) })
                .name(format!("reserve {step}"))
                .await;
            match reserved {
                Ok(confirmation) => done.push((step, confirmation)),
                // Only terminal errors get here: a retryable one (provider down) retries the step.
                // A refused step booked nothing, so there is nothing to undo for it.
                Err(refusal) => {
                    tracing::warn!(trip, step, %refusal, "booking refused; compensating");
                    for (step, confirmation) in done.iter().rev() {
                        // Journaled like the steps: on replay an undo that ran is not repeated,
                        // and one that fails retryably is retried until it succeeds.
                        ctx.run(|| async move {
                            tracing::info!(trip, step, %confirmation, "cancelled");
                            Ok(())
                        })
                        .name(format!("cancel {step}"))
                        .await?;
                    }
                    return Err(refusal.into());
                }
            }
        }
        Ok(done
            .into_iter()
            .map(|(_, confirmation)| confirmation)
            .collect())
    }
}

/// A simulated provider call: a confirmation number, or a terminal refusal.
fn reserve(trip: &str, step: &str, refused: bool) -> HandlerResult<String> {
    if refused {
        let message = format!("no {step} available for trip {trip}");
        return Err(TerminalError::new_with_code(409, message).into());
    }
    let confirmation = format!("{step}-{trip}");
    tracing::info!(trip, step, %confirmation, "reserved");
    Ok(confirmation)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    restate_runtime::init_tracing();
    Runtime::builder()
        .data_dir("./data")
        .build()?
        .serve()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The saga on the test runtime: a refusal injected into a step, and the compensations it
    //! leads to read back from the journal.

    use super::*;
    use restate_runtime::testing::{InvocationFilter, RunFault, TestRuntime};

    /// The steps of a booking whose hotel is refused: three reservations, two undos.
    const REFUSED_HOTEL: [&str; 5] = [
        "reserve flight",
        "reserve car",
        "reserve hotel",
        "cancel car",
        "cancel flight",
    ];

    #[tokio::test]
    async fn a_refused_hotel_cancels_the_car_then_the_flight() {
        let t = TestRuntime::builder().bind(Trip).build().await;
        t.fail_run("reserve hotel", 1, RunFault::Terminal);
        let request = TripRequest {
            trip_id: "t1".into(),
            fail_on: None,
        };
        let booked = t
            .handle()
            .client::<Trip>()
            .book(request)
            .send()
            .await
            .unwrap();
        t.run_until_idle().await;
        let view = t.invocation(booked.invocation_id()).unwrap();
        let refusal = view.output::<Vec<String>>().unwrap().unwrap_err();
        assert!(refusal.message().contains("injected"), "{refusal}");
        assert_eq!(view.run_names(), REFUSED_HOTEL);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_after_any_commit_cancels_each_booking_once() {
        // Crash right after the 1st, 2nd, ... commit, until a booking needs no crash.
        for n in 1..=12 {
            let t = TestRuntime::builder().bind(Trip).build().await;
            t.crash_after_commits(n);
            let request = TripRequest {
                trip_id: format!("t{n}"),
                fail_on: Some("hotel".into()),
            };
            let sent = t.handle().client::<Trip>().book(request).send().await;
            t.run_until_idle().await;
            let crashed = t.crashed();
            if crashed {
                t.restart().await;
                t.run_until_idle().await;
            }
            let bookings = t.invocations(InvocationFilter::default().handler("book"));
            if sent.is_ok() {
                assert_eq!(bookings.len(), 1, "an acknowledged booking is kept ({n})");
            }
            for view in bookings {
                assert_eq!(view.status(), "completed", "{n}");
                assert_eq!(view.run_names(), REFUSED_HOTEL, "crash after commit {n}");
            }
            if !crashed {
                return;
            }
        }
        panic!("every booking crashed");
    }
}
