//! Which server replies belong to which client message, so the proxy can drop the replies to
//! messages it injected (a re-prepare, a settings replay) and answer some messages itself
//! (a cached Parse, a Close of a proxy-managed statement) in exactly the order Postgres would.
//!
//! Pure bookkeeping: the session loop pushes an [`Expect`] for every message it sends or
//! answers, then feeds every server frame through [`Replies::on_frame`].

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::wire::btag;

/// The kind of message whose replies are awaited; it decides which reply ends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A simple `Query` (or `FunctionCall`): everything up to ReadyForQuery.
    Query,
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
    Sync,
}

impl Unit {
    fn ends_on(self, tag: u8) -> bool {
        match self {
            Unit::Query | Unit::Sync => tag == btag::READY_FOR_QUERY,
            Unit::Parse => tag == btag::PARSE_COMPLETE,
            Unit::Bind => tag == btag::BIND_COMPLETE,
            Unit::Close => tag == btag::CLOSE_COMPLETE,
            Unit::Describe => matches!(tag, btag::ROW_DESCRIPTION | btag::NO_DATA),
            Unit::Execute => matches!(
                tag,
                btag::COMMAND_COMPLETE | btag::EMPTY_QUERY | btag::PORTAL_SUSPENDED
            ),
        }
    }

    /// Extended-protocol messages are skipped by the server after an error until Sync.
    fn is_extended(self) -> bool {
        !matches!(self, Unit::Query | Unit::Sync)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Replies go to the client.
    Forward,
    /// The proxy sent this itself: replies are dropped, but an error still reaches the
    /// client, in place of the replies of the message it broke (a failed re-prepare).
    Injected,
    /// A settings replay before the client's messages: replies are dropped and an error
    /// becomes a warning, since the client's own statements still run.
    Replay,
    /// The proxy answers with these bytes when the message's turn comes.
    Answer(Bytes),
}

/// What to undo when a message turns out not to have taken effect (it failed, or the
/// server skipped it after an earlier error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Undo {
    /// A proxy statement id the server did not prepare after all.
    pub server_statement: Option<u64>,
    /// A client statement name whose Parse did not happen.
    pub client_statement: Option<Bytes>,
    /// The server's unnamed statement is not what the proxy thought.
    pub server_unnamed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub unit: Unit,
    pub mode: Mode,
    pub undo: Undo,
}

impl Expect {
    pub fn forward(unit: Unit) -> Self {
        Self {
            unit,
            mode: Mode::Forward,
            undo: Undo::default(),
        }
    }
}

/// What the session loop must do with one server frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Forward,
    Drop,
    /// An ErrorResponse to be sent as a WARNING NoticeResponse.
    Warn,
}

/// Side effects the session loop applies after a frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub undo: Vec<Undo>,
    /// A ReadyForQuery for the client: a Sync or Query of the client completed.
    pub ready: bool,
    /// ReadyForQuery of an injected or replayed message; the client never sees it.
    pub ready_hidden: bool,
    /// An ErrorResponse reached the client.
    pub client_error: bool,
    /// The settings replay failed: the server's settings are unknown now.
    pub replay_failed: bool,
}

#[derive(Debug, Default)]
pub struct Replies {
    queue: VecDeque<Expect>,
    /// After an extended-protocol error the server skips every message until the next Sync;
    /// set when that Sync has not been sent yet, so later messages are skipped as they come.
    skip_until_sync: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("server sent {tag:?} when no reply was expected")]
pub struct Unexpected {
    pub tag: char,
}

impl Replies {
    /// Queues the replies a message will get; returns its undo instead when the server is
    /// going to skip the message (an earlier error, no Sync since).
    pub fn push(&mut self, e: Expect) -> Option<Undo> {
        if self.skip_until_sync {
            if e.unit != Unit::Sync {
                return Some(e.undo);
            }
            self.skip_until_sync = false;
        }
        self.queue.push_back(e);
        None
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether a reply of the server is still awaited (the proxy's own answers aside).
    pub fn awaits_server(&self) -> bool {
        self.queue
            .iter()
            .any(|e| !matches!(e.mode, Mode::Answer(_)))
    }

    pub fn front_is_answer(&self) -> bool {
        matches!(
            self.queue.front(),
            Some(Expect {
                mode: Mode::Answer(_),
                ..
            })
        )
    }

    /// Emits the proxy's own answers that are next in line; call after pushing and after
    /// every frame.
    pub fn answer_ready(&mut self, out: &mut BytesMut) {
        while let Some(Expect {
            mode: Mode::Answer(bytes),
            ..
        }) = self.queue.front()
        {
            out.extend_from_slice(bytes);
            self.queue.pop_front();
        }
    }

    /// Accounts one server frame, returning what to do with it.
    pub fn on_frame(&mut self, tag: u8, fx: &mut Effects) -> Result<Action, Unexpected> {
        if matches!(
            tag,
            btag::NOTICE_RESPONSE | btag::NOTIFICATION_RESPONSE | btag::PARAMETER_STATUS
        ) {
            // Asynchronous: may come at any time. Inside the proxy's own replay the server
            // reports the settings the client already believes in.
            let hidden = matches!(self.queue.front(), Some(e) if e.mode == Mode::Replay);
            return Ok(if hidden {
                Action::Drop
            } else {
                Action::Forward
            });
        }
        let Some(head) = self.queue.front() else {
            return Err(Unexpected { tag: tag as char });
        };
        let forward = matches!(head.mode, Mode::Forward);
        let unit = head.unit;
        if tag == btag::ERROR_RESPONSE {
            let replay = matches!(head.mode, Mode::Replay);
            return Ok(self.on_error(unit, replay, fx));
        }
        if unit.ends_on(tag) {
            self.queue.pop_front();
            if tag == btag::READY_FOR_QUERY {
                if forward {
                    fx.ready = true;
                } else {
                    fx.ready_hidden = true;
                }
            }
        }
        Ok(if forward {
            Action::Forward
        } else {
            Action::Drop
        })
    }

    fn on_error(&mut self, unit: Unit, replay: bool, fx: &mut Effects) -> Action {
        let action = match replay {
            true => {
                fx.replay_failed = true;
                Action::Warn
            }
            false => {
                fx.client_error = true;
                Action::Forward
            }
        };
        if unit.is_extended() {
            // This message failed and the server now skips everything up to the Sync.
            let failed = self.queue.pop_front().expect("head exists");
            fx.undo.push(failed.undo);
            while let Some(next) = self.queue.front() {
                if next.unit == Unit::Sync {
                    return action;
                }
                let skipped = self.queue.pop_front().expect("front exists");
                fx.undo.push(skipped.undo);
            }
            self.skip_until_sync = true;
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(b: &'static [u8]) -> Expect {
        Expect {
            unit: Unit::Parse,
            mode: Mode::Answer(Bytes::from_static(b)),
            undo: Undo::default(),
        }
    }

    fn run(r: &mut Replies, tags: &[u8]) -> (Vec<Action>, Effects) {
        let mut fx = Effects::default();
        let actions = tags
            .iter()
            .map(|&t| r.on_frame(t, &mut fx).unwrap())
            .collect();
        (actions, fx)
    }

    #[test]
    fn simple_query_forwards_until_ready() {
        let mut r = Replies::default();
        r.push(Expect::forward(Unit::Query));
        let (a, fx) = run(&mut r, b"TDDCZ");
        assert!(a.iter().all(|a| *a == Action::Forward));
        assert!(fx.ready);
        assert!(r.is_empty());
        assert_eq!(
            r.on_frame(b'Z', &mut Effects::default()),
            Err(Unexpected { tag: 'Z' })
        );
    }

    #[test]
    fn cached_parse_is_answered_in_order() {
        let mut r = Replies::default();
        let mut out = BytesMut::new();
        r.push(Expect::forward(Unit::Bind));
        r.push(answer(b"1"));
        r.push(Expect::forward(Unit::Sync));
        r.answer_ready(&mut out);
        assert!(out.is_empty(), "the answer waits for the Bind's reply");
        let (a, _) = run(&mut r, b"2");
        assert_eq!(a, vec![Action::Forward]);
        r.answer_ready(&mut out);
        assert_eq!(&out[..], b"1");
        let (_, fx) = run(&mut r, b"Z");
        assert!(fx.ready);
    }

    #[test]
    fn injected_parse_is_dropped_but_its_error_reaches_the_client() {
        let mut r = Replies::default();
        let undo = Undo {
            server_statement: Some(7),
            ..Undo::default()
        };
        r.push(Expect {
            unit: Unit::Parse,
            mode: Mode::Injected,
            undo: undo.clone(),
        });
        r.push(Expect::forward(Unit::Bind));
        r.push(answer(b"3"));
        r.push(Expect::forward(Unit::Execute));
        r.push(Expect::forward(Unit::Sync));
        let (a, fx) = run(&mut r, b"EZ");
        assert_eq!(a, vec![Action::Forward, Action::Forward]);
        assert!(fx.client_error);
        assert_eq!(fx.undo[0], undo);
        assert_eq!(
            fx.undo.len(),
            4,
            "Bind, the answer and Execute were skipped"
        );
        let mut out = BytesMut::new();
        r.answer_ready(&mut out);
        assert!(out.is_empty(), "a skipped message gets no answer");
        assert!(r.is_empty());

        r.push(Expect {
            unit: Unit::Parse,
            mode: Mode::Injected,
            undo: Undo::default(),
        });
        r.push(Expect::forward(Unit::Bind));
        let (a, _) = run(&mut r, b"12");
        assert_eq!(a, vec![Action::Drop, Action::Forward]);
    }

    #[test]
    fn replay_is_hidden_and_its_error_is_a_warning() {
        let mut r = Replies::default();
        r.push(Expect {
            unit: Unit::Query,
            mode: Mode::Replay,
            undo: Undo::default(),
        });
        r.push(Expect::forward(Unit::Query));
        let (a, fx) = run(&mut r, b"SCESZ");
        assert_eq!(
            a,
            vec![
                Action::Drop,
                Action::Drop,
                Action::Warn,
                Action::Drop,
                Action::Drop
            ]
        );
        assert!(fx.replay_failed && fx.ready_hidden && !fx.ready);
        let (a, fx) = run(&mut r, b"CZ");
        assert_eq!(a, vec![Action::Forward, Action::Forward]);
        assert!(fx.ready);
    }

    #[test]
    fn messages_sent_after_an_error_are_skipped_until_sync() {
        let mut r = Replies::default();
        r.push(Expect::forward(Unit::Execute));
        let (_, fx) = run(&mut r, b"E");
        assert!(fx.client_error && r.is_empty());
        let undo = Undo {
            server_statement: Some(3),
            ..Undo::default()
        };
        let skipped = Expect {
            unit: Unit::Parse,
            mode: Mode::Forward,
            undo: undo.clone(),
        };
        assert_eq!(r.push(skipped), Some(undo));
        assert_eq!(r.push(Expect::forward(Unit::Sync)), None);
        assert_eq!(r.push(Expect::forward(Unit::Bind)), None);
        let (_, fx) = run(&mut r, b"Z2");
        assert!(fx.ready && r.is_empty());
    }

    #[test]
    fn errors_inside_a_simple_query_do_not_skip() {
        let mut r = Replies::default();
        r.push(Expect::forward(Unit::Query));
        r.push(Expect::forward(Unit::Query));
        let (_, fx) = run(&mut r, b"EZ");
        assert!(fx.client_error);
        assert_eq!(r.len(), 1);
        assert!(fx.undo.is_empty());
    }

    #[test]
    fn describe_and_execute_units_end_on_their_last_reply() {
        let mut r = Replies::default();
        for u in [Unit::Describe, Unit::Execute, Unit::Execute, Unit::Sync] {
            r.push(Expect::forward(u));
        }
        run(&mut r, b"tTDDsGC");
        assert_eq!(r.len(), 1);
        run(&mut r, b"Z");
        assert!(r.is_empty());
    }
}
