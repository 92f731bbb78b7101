//! A group's writes as one statement: each part (the fence, a table's deletes or puts, the
//! notifications) is a common table expression of a single statement over its own arrays.
//! A group is then one message to the database and one answer, where it was a statement per
//! table between a `BEGIN` and a `COMMIT`; and a group that reads nothing in between needs no
//! `BEGIN` or `COMMIT` at all: one statement is its own transaction.
//!
//! The parts of a statement run on one snapshot and do not see each other's rows, so no row
//! may be both deleted and put by two of them (which of the two lands depends on the order
//! PostgreSQL runs them in; two deletes of one row are harmless): [`Fold`](super::fold) drops
//! a delete of a row it puts (the put replaces the whole row), and a group that puts a row
//! into a range it deleted (all of an invocation's journal, all of a scope's state) is sent as
//! two statements, its deletes and then its puts, in one transaction.

use std::fmt::Write as _;

use super::{FINISHED_CHANNEL, INBOX_CHANNEL, Param};

/// Deletes all rows of each (service, key) of a table keyed by (service, key, ...).
macro_rules! delete_scopes {
    ($table:literal) => {
        concat!(
            "DELETE FROM ",
            $table,
            " t USING unnest($1::bytea[], $2::bytea[]) AS d(service, key) \
             WHERE t.service = d.service AND t.key = d.key"
        )
    };
}

/// Deletes the rows of each (service, key, name) of a table keyed by (service, key, name, ...).
macro_rules! delete_named {
    ($table:literal) => {
        concat!(
            "DELETE FROM ",
            $table,
            " t USING unnest($1::bytea[], $2::bytea[], $3::bytea[]) AS d(service, key, name) \
             WHERE t.service = d.service AND t.key = d.key AND t.name = d.name"
        )
    };
}

/// Upserts a named value (state, a promise's outcome) per (service, key, name).
macro_rules! put_named {
    ($table:literal, $value:literal) => {
        concat!(
            "INSERT INTO ",
            $table,
            " (service, key, name, ",
            $value,
            ") SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[]) \
             ON CONFLICT (service, key, name) DO UPDATE SET ",
            $value,
            " = excluded.",
            $value
        )
    };
}

/// The parts a statement may hold, in the order it holds them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Part {
    /// The rows of the partitions written, locked FOR SHARE in partition order, and their
    /// epochs compared: `restate_fence_refused` (schema 4) refuses the transaction when one
    /// differs. A query that locks rows is never folded into the one that uses it, so the
    /// lock covers every row it names on any PostgreSQL.
    Fence,
    DeleteInvocations,
    PutInvocations,
    DeleteJournals,
    PutJournal,
    DeleteStateScopes,
    DeleteStateRows,
    PutState,
    DeletePromiseScopes,
    DeletePromiseRows,
    PutPromises,
    DeleteScopePromiseWaiters,
    DeletePromiseWaiters,
    AddPromiseWaiters,
    DeleteAllWakes,
    DeleteWakes,
    AddWakes,
    DeleteResultWaiters,
    AddResultWaiters,
    /// Applied inbox messages, removed with the effects they had.
    DeleteInbox,
    /// Messages from handlers to other partitions, in their order; they start nothing that is
    /// deduplicated at the insert (the owner that applies one finds what exists). The owners
    /// are woken at the commit.
    Forward,
    /// Wakes other processes that wait on an invocation's end (sent at the commit).
    NotifyFinished,
}

// `Part::ALL` lists every part in declaration order (parameters are numbered in its order and
// pushed in the enum's), and a shape's bits fit a `u32`: checked as the crate compiles.
const _: () = {
    let mut i = 0;
    while i < Part::ALL.len() {
        assert!(
            Part::ALL[i] as usize == i,
            "Part::ALL is in declaration order"
        );
        i += 1;
    }
    assert!(Part::ALL.len() <= 32, "a shape is a u32");
};

impl Part {
    pub(super) const ALL: [Part; 22] = [
        Part::Fence,
        Part::DeleteInvocations,
        Part::PutInvocations,
        Part::DeleteJournals,
        Part::PutJournal,
        Part::DeleteStateScopes,
        Part::DeleteStateRows,
        Part::PutState,
        Part::DeletePromiseScopes,
        Part::DeletePromiseRows,
        Part::PutPromises,
        Part::DeleteScopePromiseWaiters,
        Part::DeletePromiseWaiters,
        Part::AddPromiseWaiters,
        Part::DeleteAllWakes,
        Part::DeleteWakes,
        Part::AddWakes,
        Part::DeleteResultWaiters,
        Part::AddResultWaiters,
        Part::DeleteInbox,
        Part::Forward,
        Part::NotifyFinished,
    ];

    fn bit(self) -> u32 {
        1 << self as u32
    }

    /// Whether it deletes rows (sent in the first statement of a group split in two).
    pub(super) fn deletes(self) -> bool {
        matches!(
            self,
            Part::DeleteInvocations
                | Part::DeleteJournals
                | Part::DeleteStateScopes
                | Part::DeleteStateRows
                | Part::DeletePromiseScopes
                | Part::DeletePromiseRows
                | Part::DeleteScopePromiseWaiters
                | Part::DeletePromiseWaiters
                | Part::DeleteAllWakes
                | Part::DeleteWakes
                | Part::DeleteResultWaiters
                | Part::DeleteInbox
        )
    }

    /// Its SQL as a statement of its own, numbering its parameters from `$1`. The fence and
    /// the notification are parts of the statement's final `SELECT` (see [`statement`]).
    pub(super) fn sql(self) -> &'static str {
        match self {
            Part::Fence => FENCE,
            Part::DeleteInvocations => {
                "DELETE FROM restate_invocations WHERE id = ANY($1::bytea[])"
            }
            Part::PutInvocations => {
                "INSERT INTO restate_invocations \
                 (id, partition_key, record, hint, due_ms, expires_at_ms) \
                 SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[], \
                 $5::int8[], $6::int8[]) ON CONFLICT (id) DO UPDATE SET record = excluded.record, \
                 hint = excluded.hint, due_ms = excluded.due_ms, \
                 expires_at_ms = excluded.expires_at_ms"
            }
            Part::DeleteJournals => "DELETE FROM restate_journal WHERE id = ANY($1::bytea[])",
            Part::PutJournal => {
                "INSERT INTO restate_journal (id, idx, entry) \
                 SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[]) \
                 ON CONFLICT (id, idx) DO UPDATE SET entry = excluded.entry"
            }
            Part::DeleteStateScopes => delete_scopes!("restate_state"),
            Part::DeleteStateRows => delete_named!("restate_state"),
            Part::PutState => put_named!("restate_state", "value"),
            Part::DeletePromiseScopes => delete_scopes!("restate_promises"),
            Part::DeletePromiseRows => delete_named!("restate_promises"),
            Part::PutPromises => put_named!("restate_promises", "outcome"),
            Part::DeleteScopePromiseWaiters => delete_scopes!("restate_promise_waiters"),
            Part::DeletePromiseWaiters => delete_named!("restate_promise_waiters"),
            Part::AddPromiseWaiters => {
                "INSERT INTO restate_promise_waiters (service, key, name, id, idx) \
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], \
                 $5::int8[]) ON CONFLICT DO NOTHING"
            }
            Part::DeleteAllWakes => "DELETE FROM restate_wakes WHERE id = ANY($1::bytea[])",
            Part::DeleteWakes => {
                "DELETE FROM restate_wakes t USING unnest($1::bytea[], $2::int8[]) AS d(id, idx) \
                 WHERE t.id = d.id AND t.idx = d.idx"
            }
            Part::AddWakes => {
                "INSERT INTO restate_wakes (id, idx) \
                 SELECT * FROM unnest($1::bytea[], $2::int8[]) ON CONFLICT DO NOTHING"
            }
            Part::DeleteResultWaiters => {
                "DELETE FROM restate_result_waiters WHERE source = ANY($1::bytea[])"
            }
            Part::AddResultWaiters => {
                "INSERT INTO restate_result_waiters (source, waiter, idx, call) \
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::bool[]) \
                 ON CONFLICT (source, waiter, idx) DO UPDATE SET call = excluded.call"
            }
            Part::DeleteInbox => "DELETE FROM restate_inbox WHERE seq = ANY($1::int8[])",
            Part::Forward => {
                "INSERT INTO restate_inbox (partition_key, id, starts, message) \
                 SELECT t.p, t.i, false, t.m \
                 FROM unnest($1::int8[], $2::bytea[], $3::bytea[]) WITH ORDINALITY \
                 AS t(p, i, m, n) ORDER BY t.n"
            }
            Part::NotifyFinished => "SELECT p FROM unnest($1::text[]) p",
        }
    }
}

/// The fence's lock, the first of its two expressions; the second, `fence_refused!`, names
/// it `locked`.
macro_rules! fence_lock {
    () => {
        "SELECT partition, epoch FROM restate_partitions WHERE partition = ANY($1::int[]) \
         ORDER BY partition FOR SHARE"
    };
}

/// Refuses the transaction when an epoch differs (one row, or none).
macro_rules! fence_refused {
    () => {
        "SELECT restate_fence_refused(array_agg(h.p ORDER BY h.p)) \
         FROM unnest($1::int[], $2::bigint[]) AS h(p, e) LEFT JOIN locked l ON l.partition = h.p \
         WHERE l.epoch IS DISTINCT FROM h.e HAVING count(*) > 0"
    };
}

/// The fence as a statement of its own.
const FENCE: &str = concat!("WITH locked AS (", fence_lock!(), ") ", fence_refused!());

/// Which parts a statement holds: the key of its prepared form.
pub(super) type Shape = u32;

/// One statement being put together: its parts, added in [`Part::ALL`]'s order, and their
/// parameters, in the same order.
#[derive(Default)]
pub(super) struct Combined {
    shape: Shape,
    last: Option<Part>,
    params: Vec<Param>,
}

impl Combined {
    pub(super) fn push(&mut self, part: Part, params: Vec<Param>) {
        assert!(
            self.last.is_none_or(|last| last < part),
            "{part:?} added after {:?}",
            self.last
        );
        debug_assert_eq!(params.len(), count_params(part.sql()), "{part:?}");
        self.last = Some(part);
        self.shape |= part.bit();
        self.params.extend(params);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.shape == 0
    }

    pub(super) fn shape(&self) -> Shape {
        self.shape
    }

    pub(super) fn into_params(self) -> Vec<Param> {
        self.params
    }
}

/// The shape of a statement holding these parts.
#[cfg(test)]
pub(super) fn shape_of(parts: impl IntoIterator<Item = Part>) -> Shape {
    parts.into_iter().fold(0, |shape, part| shape | part.bit())
}

/// The SQL of a statement of this shape: one expression per part, the fence's refusal and the
/// notifications in the final `SELECT`.
pub(super) fn statement(shape: Shape) -> String {
    let mut expressions = Vec::new();
    let mut selected = Vec::new();
    let mut offset = 0;
    for part in Part::ALL.into_iter().filter(|p| shape & p.bit() != 0) {
        let base = offset;
        offset += count_params(part.sql());
        match part {
            Part::Fence => {
                expressions.push(format!("locked AS ({})", renumbered(fence_lock!(), base)));
                expressions.push(format!(
                    "fenced AS ({})",
                    renumbered(fence_refused!(), base)
                ));
                selected.push("(SELECT count(*) FROM fenced)".to_owned());
            }
            Part::NotifyFinished => selected.push(format!(
                "(SELECT count(pg_notify('{FINISHED_CHANNEL}', p)::text) FROM ({}) n)",
                renumbered(part.sql(), base)
            )),
            _ => {
                let sql = renumbered(part.sql(), base);
                expressions.push(format!("p{} AS ({sql})", part as u32));
                if part == Part::Forward {
                    selected.push(format!("pg_notify('{INBOX_CHANNEL}', '')::text"));
                }
            }
        }
    }
    let mut out = String::new();
    if !expressions.is_empty() {
        let _ = write!(out, "WITH {} ", expressions.join(", "));
    }
    if selected.is_empty() {
        selected.push("1".to_owned());
    }
    let _ = write!(out, "SELECT {}", selected.join(", "));
    out
}

/// The highest `$n` in `sql`.
fn count_params(sql: &str) -> usize {
    let mut highest = 0;
    scan_params(sql, |n| {
        highest = highest.max(n);
        n
    });
    highest
}

/// `sql` with every `$n` made `$(n + offset)`.
fn renumbered(sql: &str, offset: usize) -> String {
    scan_params(sql, |n| n + offset)
}

/// `sql` with each `$n` replaced by `$f(n)`.
fn scan_params(sql: &str, mut f: impl FnMut(usize) -> usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(n) = rest[..digits].parse::<usize>() {
            let _ = write!(out, "{}", f(n));
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_on_across_parts() {
        assert_eq!(
            renumbered("a = $1 AND b = $12::int[]", 3),
            "a = $4 AND b = $15::int[]"
        );
        assert_eq!(count_params(Part::PutInvocations.sql()), 6);
        assert_eq!(count_params(Part::Fence.sql()), 2);
        let sql = statement(shape_of([
            Part::Fence,
            Part::PutJournal,
            Part::NotifyFinished,
        ]));
        assert!(sql.contains("unnest($1::int[], $2::bigint[])"), "{sql}");
        assert!(
            sql.contains("unnest($3::bytea[], $4::int8[], $5::bytea[])"),
            "{sql}"
        );
        assert!(sql.contains("unnest($6::text[])"), "{sql}");
        assert_eq!(count_params(&sql), 6);
    }

    #[test]
    #[should_panic(expected = "added after")]
    fn parts_are_added_in_their_order() {
        let mut combined = Combined::default();
        combined.push(
            Part::PutJournal,
            vec![Box::new(0), Box::new(0), Box::new(0)],
        );
        combined.push(Part::PutInvocations, Vec::new());
    }
}
