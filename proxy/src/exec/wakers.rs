//! Per-socket wakers that remember which socket woke the session task.
//!
//! The session loop waits on two sockets at once. Polling a socket that returned Pending
//! and has not become ready since only re-registers the same waker, under a lock inside
//! the runtime; done for both sockets on every wake-up, that was a measurable share of the
//! proxy's cost per transaction. Each socket is polled with its own waker, which flags the
//! socket before waking the task, and the loop polls only flagged sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};

struct Flag {
    /// The socket must be polled: it never was, it became ready, or its last poll
    /// returned data (so it is not registered for a wake-up).
    poll_me: AtomicBool,
    task: Waker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.poll_me.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// One socket's waker and flag.
pub(super) struct SideWaker {
    flag: Arc<Flag>,
    waker: Waker,
}

impl SideWaker {
    fn new(task: &Waker) -> Self {
        let flag = Arc::new(Flag {
            poll_me: AtomicBool::new(true),
            task: task.clone(),
        });
        Self {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// Whether the socket needs polling now; clears the flag (set it again with
    /// [`SideWaker::poll_again`] when the poll did not end in Pending).
    pub(super) fn take(&self) -> bool {
        self.flag.poll_me.swap(false, Ordering::AcqRel)
    }

    pub(super) fn poll_again(&self) {
        self.flag.poll_me.store(true, Ordering::Release);
    }

    pub(super) fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }
}

/// The wakers of a session's client and server sockets.
pub(super) struct SessionWakers {
    pub(super) client: SideWaker,
    pub(super) server: SideWaker,
}

impl SessionWakers {
    /// Wakers for the task behind `cx`; rebuilt (all sockets flagged) if the task's waker
    /// changed, so no registration is left pointing at a stale waker.
    pub(super) fn for_task(slot: &mut Option<SessionWakers>, cx: &Context<'_>) {
        let stale = match slot {
            Some(w) => !w.client.flag.task.will_wake(cx.waker()),
            None => true,
        };
        if stale {
            *slot = Some(SessionWakers {
                client: SideWaker::new(cx.waker()),
                server: SideWaker::new(cx.waker()),
            });
        }
    }
}
