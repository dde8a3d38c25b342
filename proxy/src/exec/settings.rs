//! Which session commands actually took effect, following Postgres's transaction rules:
//! a `SET` counts once its statement succeeded and its transaction committed; `ROLLBACK TO
//! SAVEPOINT` undoes the ones made after the savepoint; an error or a rollback undoes the
//! transaction's. Pure bookkeeping, fed by the session loop from the server's replies.

use crate::classify::SessionCommand;

#[derive(Debug, Default)]
pub(super) struct SettingsTracker {
    /// Sent since the last ReadyForQuery; they count if nothing fails before it.
    pending: Vec<SessionCommand>,
    /// Of the open transaction; they count if it commits.
    txn: Vec<SessionCommand>,
    /// Savepoints of the open transaction: name, and how many of `txn` preceded it.
    savepoints: Vec<(String, usize)>,
    error_since_ready: bool,
    /// How the last transaction-ending command since the last ReadyForQuery ended it.
    txn_end: Option<bool>,
}

impl SettingsTracker {
    pub(super) fn note(&mut self, cmds: impl IntoIterator<Item = SessionCommand>) {
        self.pending.extend(cmds);
    }

    /// Whether command tags matter right now (they are decoded only then).
    pub(super) fn is_tracking(&self) -> bool {
        !self.pending.is_empty() || !self.txn.is_empty()
    }

    pub(super) fn on_error(&mut self) {
        self.error_since_ready = true;
    }

    /// A CommandComplete's tag. `ROLLBACK TO` also says ROLLBACK; only the last such tag
    /// before an idle ReadyForQuery decides, and by then it is the transaction's end.
    pub(super) fn on_command_tag(&mut self, tag: &[u8]) {
        match tag {
            b"COMMIT" => self.txn_end = Some(true),
            b"ROLLBACK" => self.txn_end = Some(false),
            _ => {}
        }
    }

    /// A ReadyForQuery with transaction status `status`: returns the commands that took
    /// effect now (only when the session is idle again).
    pub(super) fn on_ready(&mut self, status: u8) -> Vec<SessionCommand> {
        let failed = std::mem::take(&mut self.error_since_ready);
        let pending = std::mem::take(&mut self.pending);
        let ended = self.txn_end.take();
        if !failed {
            for cmd in pending {
                self.fold(cmd);
            }
        }
        if status != b'I' {
            return Vec::new();
        }
        let cmds = std::mem::take(&mut self.txn);
        self.savepoints.clear();
        if failed || ended == Some(false) {
            return Vec::new();
        }
        cmds
    }

    fn fold(&mut self, cmd: SessionCommand) {
        let find = |sp: &[(String, usize)], name: &str| sp.iter().rposition(|(n, _)| n == name);
        match cmd {
            SessionCommand::Savepoint { name } => self.savepoints.push((name, self.txn.len())),
            SessionCommand::RollbackTo { name } => {
                if let Some(i) = find(&self.savepoints, &name) {
                    self.txn.truncate(self.savepoints[i].1);
                    self.savepoints.truncate(i + 1);
                }
            }
            SessionCommand::Release { name } => {
                if let Some(i) = find(&self.savepoints, &name) {
                    self.savepoints.truncate(i);
                }
            }
            other => self.txn.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &str) -> SessionCommand {
        SessionCommand::Set {
            name: "app.v".into(),
            value: v.into(),
        }
    }

    fn sp(kind: &str, name: &str) -> SessionCommand {
        let name = name.to_owned();
        match kind {
            "savepoint" => SessionCommand::Savepoint { name },
            "rollback" => SessionCommand::RollbackTo { name },
            _ => SessionCommand::Release { name },
        }
    }

    #[test]
    fn outside_a_transaction_a_set_counts_unless_it_failed() {
        let mut t = SettingsTracker::default();
        t.note([set("1")]);
        assert_eq!(t.on_ready(b'I'), vec![set("1")]);
        t.note([set("2")]);
        t.on_error();
        assert_eq!(t.on_ready(b'I'), vec![]);
    }

    #[test]
    fn a_transaction_counts_on_commit_only() {
        let mut t = SettingsTracker::default();
        t.note([set("1")]);
        assert_eq!(t.on_ready(b'T'), vec![]);
        t.on_command_tag(b"COMMIT");
        assert_eq!(t.on_ready(b'I'), vec![set("1")]);

        t.note([set("2")]);
        assert_eq!(t.on_ready(b'T'), vec![]);
        t.on_command_tag(b"ROLLBACK");
        assert_eq!(t.on_ready(b'I'), vec![]);

        // BEGIN; SET; ROLLBACK in one string: one ReadyForQuery, idle, last tag ROLLBACK.
        t.note([set("3")]);
        t.on_command_tag(b"BEGIN");
        t.on_command_tag(b"SET");
        t.on_command_tag(b"ROLLBACK");
        assert_eq!(t.on_ready(b'I'), vec![]);

        // An error aborts; the COMMIT of an aborted transaction answers ROLLBACK.
        t.note([set("4")]);
        assert!(t.on_ready(b'T').is_empty());
        t.on_error();
        assert!(t.on_ready(b'E').is_empty());
        t.on_command_tag(b"ROLLBACK");
        assert!(t.on_ready(b'I').is_empty());
    }

    #[test]
    fn savepoints_undo_what_came_after_them() {
        let mut t = SettingsTracker::default();
        t.note([
            set("kept"),
            sp("savepoint", "a"),
            set("undone"),
            sp("savepoint", "b"),
            set("also undone"),
            sp("rollback", "a"),
            set("after"),
            sp("release", "a"),
        ]);
        assert!(t.on_ready(b'T').is_empty());
        t.on_command_tag(b"ROLLBACK"); // ROLLBACK TO says ROLLBACK too…
        t.on_command_tag(b"COMMIT"); // …but the commit is what ended it.
        assert_eq!(t.on_ready(b'I'), vec![set("kept"), set("after")]);
        assert!(!t.is_tracking());
    }
}
