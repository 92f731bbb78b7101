//! Log lines: the subscriber [`crate::init_tracing`] installs, and the invocation that every
//! line a handler logs (or the engine logs on its behalf) names.
//!
//! A line logged inside an invocation reads `invocation{id=… target=…}:` ahead of its own
//! spans, as if it were in a `tracing` span of that name. Under the subscriber
//! `init_tracing` installs, the name comes from a task-local that the line's formatter reads:
//! nothing is created, formatted or entered for an invocation that logs nothing. A span per
//! invocation (created, its fields formatted, entered and left at every poll) cost about 6% of
//! the instructions of a small invocation. Under any other subscriber (the application's own,
//! or one set for a scope), which knows nothing of the task-local, each invocation runs in an
//! `invocation` span instead; which of the two is decided per invocation, by the subscriber
//! current where it starts.
//!
//! What the task-local does not do that the span did: it is not `Span::current()`, so a task a
//! handler spawns with `.in_current_span()` is not labelled, and a `RUST_LOG` directive on the
//! span (`[invocation{id=…}]=debug`) matches nothing. Every line of the invocation's own task is
//! labelled, whatever the filter says of the runtime's modules.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tracing::{Event, Instrument as _, Level, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::ids::InvocationId;
use crate::storage::Target;

tokio::task_local! {
    static CURRENT: Arc<Invocation>;
}

/// What a log line names of the invocation it was logged in.
pub(crate) struct Invocation {
    pub id: InvocationId,
    pub target: Target,
}

/// Runs `task` as invocation `invocation`: the lines it logs name it.
pub(crate) async fn within<F: Future>(invocation: Arc<Invocation>, task: F) -> F::Output {
    if tracing::dispatcher::get_default(|current| current.downcast_ref::<Lines>().is_some()) {
        return CURRENT.scope(invocation, task).await;
    }
    let span = tracing::info_span!("invocation", id = %invocation.id, target = %invocation.target);
    task.instrument(span).await
}

/// The format of `tracing_subscriber`'s default (`Full`) lines, with the current invocation
/// named ahead of the line's spans; a line logged outside an invocation is the default one.
#[derive(Default)]
pub(crate) struct Lines {
    default: Format,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Ok(invocation) = CURRENT.try_with(Arc::clone) else {
            return self.default.format_event(ctx, writer, event);
        };
        // The ANSI escapes, none when the writer takes none (as the default format's).
        let ansi = writer.has_ansi_escapes();
        let escape = |code: &'static str| if ansi { code } else { "" };
        let (bold, dimmed, italic, end) = (
            escape("\x1b[1m"),
            escape("\x1b[2m"),
            escape("\x1b[3m"),
            escape("\x1b[0m"),
        );
        // A `log` record's own target and place, as the default format shows them.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write!(writer, "{dimmed}")?;
        if SystemTime.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        write!(writer, "{end} ")?;
        let (color, level) = match *meta.level() {
            Level::TRACE => ("\x1b[35m", "TRACE"),
            Level::DEBUG => ("\x1b[34m", "DEBUG"),
            Level::INFO => ("\x1b[32m", " INFO"),
            Level::WARN => ("\x1b[33m", " WARN"),
            Level::ERROR => ("\x1b[31m", "ERROR"),
        };
        write!(writer, "{}{level}{end} ", escape(color))?;
        write!(
            writer,
            "{bold}invocation{end}{bold}{{{end}{italic}id{end}{dimmed}={end}{} \
             {italic}target{end}{dimmed}={end}{}{bold}}}{end}{dimmed}:{end}",
            invocation.id, invocation.target
        )?;
        for span in ctx.event_scope().into_iter().flat_map(|s| s.from_root()) {
            write!(writer, "{bold}{}{end}", span.metadata().name())?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>()
                && !fields.is_empty()
            {
                write!(writer, "{bold}{{{end}{fields}{bold}}}{end}")?;
            }
            write!(writer, "{dimmed}:{end}")?;
        }
        write!(writer, " {dimmed}{}{end}{dimmed}:{end} ", meta.target())?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use super::*;

    /// Lines written by a subscriber, kept for the test to read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn subscriber(lines: Captured, ours: bool, ansi: bool) -> impl Subscriber + Send + Sync {
        let builder = tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_writer(move || lines.clone());
        match ours {
            true => Box::new(builder.event_format(Lines::default()).finish()),
            false => Box::new(builder.finish()) as Box<dyn Subscriber + Send + Sync>,
        }
    }

    /// Logs one line in an invocation, under a user span, and one outside it.
    async fn log_in_and_out(invocation: Arc<Invocation>) {
        CURRENT
            .scope(invocation.clone(), async {
                let _user = tracing::info_span!("charge", amount = 5).entered();
                tracing::warn!(attempt = 2, "card declined");
            })
            .await;
        tracing::info!("between invocations");
    }

    fn invocation() -> Arc<Invocation> {
        Arc::new(Invocation {
            id: InvocationId::random(3),
            target: Target {
                service: "Payments".into(),
                key: Some("in_1".into()),
                handler: "charge".into(),
            },
        })
    }

    /// The tail of each line, after its timestamp (the clock differs between the two runs).
    fn tails(text: &str) -> Vec<&str> {
        text.lines().map(|l| l.split_once(' ').unwrap().1).collect()
    }

    /// The lines `log_in_and_out` logs, under [`Lines`] or with the invocation as a span under
    /// the default format.
    async fn lines(invocation: &Arc<Invocation>, ours: bool, ansi: bool) -> String {
        let lines = Captured::default();
        let _guard = tracing::subscriber::set_default(subscriber(lines.clone(), ours, ansi));
        match ours {
            true => log_in_and_out(invocation.clone()).await,
            false => {
                let span = tracing::info_span!(
                    "invocation",
                    id = %invocation.id,
                    target = %invocation.target
                );
                async {
                    let _user = tracing::info_span!("charge", amount = 5).entered();
                    tracing::warn!(attempt = 2, "card declined");
                }
                .instrument(span)
                .await;
                tracing::info!("between invocations");
            }
        }
        lines.text()
    }

    #[tokio::test]
    async fn a_line_in_an_invocation_names_it_as_its_span_did_and_one_outside_is_the_default() {
        let invocation = invocation();
        for ansi in [false, true] {
            let ours = lines(&invocation, true, ansi).await;
            let spans = lines(&invocation, false, ansi).await;
            assert_eq!(
                tails(&ours),
                tails(&spans),
                "ours:\n{ours}\nspans:\n{spans}"
            );
            assert_eq!(ours.lines().count(), 2, "{ours}");
        }
        let plain = lines(&invocation, true, false).await;
        let expected = format!(
            " WARN invocation{{id={} target=Payments/in_1/charge}}:charge{{amount=5}}: \
             restate_runtime::logs::tests: card declined attempt=2",
            invocation.id
        );
        assert_eq!(tails(&plain)[0], expected);
    }

    /// Whether `within` runs its task under the task-local (no span current in it) or in an
    /// `invocation` span, and the line the task logged.
    async fn run_within(ours: bool) -> (bool, String) {
        let lines = Captured::default();
        let _guard = tracing::subscriber::set_default(subscriber(lines.clone(), ours, false));
        let invocation = invocation();
        let spanless = within(invocation.clone(), async {
            tracing::info!("hello");
            tracing::Span::current().is_none()
        })
        .await;
        let line = lines.text();
        let expected = format!(
            "invocation{{id={} target=Payments/in_1/charge}}:",
            invocation.id
        );
        assert!(line.contains(&expected), "{line}");
        (spanless, line)
    }

    #[tokio::test]
    async fn an_invocation_runs_without_a_span_under_the_lines_and_in_one_under_another_format() {
        assert!(run_within(true).await.0, "under `Lines`: no span");
        assert!(
            !run_within(false).await.0,
            "under the default format: the span"
        );
    }

    #[tokio::test]
    async fn a_log_record_in_an_invocation_keeps_its_own_target() {
        let invocation = invocation();
        let mut tails_of = Vec::new();
        for ours in [true, false] {
            let lines = Captured::default();
            let _guard = tracing::subscriber::set_default(subscriber(lines.clone(), ours, false));
            let record = || {
                let record = log::Record::builder()
                    .target("billing::gateway")
                    .level(log::Level::Info)
                    .args(format_args!("connected"))
                    .build();
                tracing_log::format_trace(&record).unwrap();
            };
            match ours {
                true => CURRENT.scope(invocation.clone(), async { record() }).await,
                false => {
                    let span = tracing::info_span!(
                        "invocation",
                        id = %invocation.id,
                        target = %invocation.target
                    );
                    span.in_scope(record);
                }
            }
            tails_of.push(tails(&lines.text()).join("\n"));
        }
        assert_eq!(tails_of[0], tails_of[1]);
        assert!(
            tails_of[0].contains("}: billing::gateway: connected"),
            "{}",
            tails_of[0]
        );
    }
}
