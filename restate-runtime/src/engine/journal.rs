//! An invocation's journal in memory: its entries by index, in a vector sorted by index.
//!
//! Journals are short and written in index order, so appending is the common case. A B-tree's
//! first node alone has room for eleven entries (about 1.6 KiB), which for the many invocations
//! of one or two entries held in memory at once was most of their size.

use crate::storage::JournalEntry;

/// Journal entries by index.
#[derive(Debug, Default)]
pub(crate) struct Journal(Vec<(u32, JournalEntry)>);

impl Journal {
    /// The entry at `index`.
    pub fn get(&self, index: u32) -> Option<&JournalEntry> {
        self.position(index).ok().map(|at| &self.0[at].1)
    }

    /// Sets the entry at `index`, replacing one that is there.
    pub fn insert(&mut self, index: u32, entry: JournalEntry) {
        match self.position(index) {
            Ok(at) => self.0[at].1 = entry,
            Err(at) => self.0.insert(at, (index, entry)),
        }
    }

    /// The entries in index order.
    pub fn entries(&self) -> &[(u32, JournalEntry)] {
        &self.0
    }

    /// The entries in index order, as `(index, entry)` pairs of references.
    pub fn iter(&self) -> impl Iterator<Item = (&u32, &JournalEntry)> {
        self.0.iter().map(|(index, entry)| (index, entry))
    }

    /// The highest index holding an entry.
    pub fn last_index(&self) -> Option<u32> {
        self.0.last().map(|(index, _)| *index)
    }

    /// Whether it holds no entry (the invocation has not started).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, index: u32) -> Result<usize, usize> {
        // Most lookups and writes are at the end.
        match self.0.last() {
            Some((last, _)) if *last < index => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&index, |(i, _)| *i),
        }
    }
}

impl FromIterator<(u32, JournalEntry)> for Journal {
    fn from_iter<I: IntoIterator<Item = (u32, JournalEntry)>>(entries: I) -> Self {
        let mut journal = Self::default();
        for (index, entry) in entries {
            journal.insert(index, entry);
        }
        journal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> JournalEntry {
        JournalEntry::ClearState { name: name.into() }
    }

    fn names(journal: &Journal) -> Vec<(u32, String)> {
        journal
            .iter()
            .map(|(i, e)| match e {
                JournalEntry::ClearState { name } => (*i, name.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn keeps_entries_sorted_by_index_and_replaces_by_index() {
        let mut journal: Journal = [(2, entry("c")), (0, entry("a"))].into_iter().collect();
        journal.insert(1, entry("b"));
        journal.insert(5, entry("e"));
        journal.insert(2, entry("C"));
        assert_eq!(
            names(&journal),
            [(0, "a"), (1, "b"), (2, "C"), (5, "e")].map(|(i, n)| (i, n.to_owned()))
        );
        assert!(matches!(journal.get(2), Some(JournalEntry::ClearState { name }) if name == "C"));
        assert!(journal.get(3).is_none());
        assert!(journal.get(9).is_none());
    }
}
