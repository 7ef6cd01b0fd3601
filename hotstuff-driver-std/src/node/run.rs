//! The std consensus loop: one thread that waits for the next input on the inbox channel (with
//! a deadline at the next timer) and runs the [`Engine`]'s turn.

use super::engine::{Engine, Ready};
use super::NodeError;
use crate::app::App;
use crate::error::StoreError;
use crate::net::{CoreMsg, Network};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Instant;

/// Local turns (acknowledgements, app replies, due timers) run before the next inbox message
/// is taken, at most this many in a row. The chain that follows a message (validate, persist,
/// vote; or form a QC, produce, persist, propose) then finishes before the next message is
/// looked at, as in the tokio driver and the directly driven core: a leader sends its proposal
/// before it checks the votes that came after its quorum. The bound keeps a node that always
/// has local work (a lone validator with a full mempool) hearing its peers and its shutdown
/// request. (Benchmark (b), 4 interleaved pairs against one message per local turn: 1,769 ->
/// 1,985 blocks/s at n = 4, 988 -> 1,000 at n = 7.)
const LOCAL_TURNS: u32 = 64;

pub(super) struct Loop<A: App> {
    pub(super) engine: Engine<A, Box<dyn Network>>,
    pub(super) rx: Receiver<CoreMsg>,
}

impl<A: App> Loop<A> {
    pub(super) fn run(mut self) -> Result<(), NodeError> {
        let span = tracing::info_span!("node", id = %self.engine.id());
        let _entered = span.enter();
        // A clean stop leaves everything durable (the background writer's queue included).
        let result = self.turns().and_then(|()| self.engine.close());
        self.engine.stopped(result.as_ref().err());
        // Network threads may be blocked delivering into a full inbox: close it first, so
        // their sends fail and they can be joined.
        let (_, closed) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.rx, closed));
        self.engine.net_mut().shutdown();
        result.map_err(NodeError::from)
    }

    fn turns(&mut self) -> Result<(), StoreError> {
        let mut local_turns = 0u32;
        loop {
            self.engine.drain()?;
            self.engine.publish_status();
            let now = Instant::now();
            let deadline = match self.engine.ready(now) {
                Ready::Handled => None,
                Ready::ProduceDue => {
                    self.engine.produce_due();
                    None
                }
                Ready::SnapshotDue => {
                    self.engine.snapshot_tick();
                    None
                }
                Ready::Wait(deadline) => Some(deadline),
            };
            let Some(deadline) = deadline else {
                local_turns += 1;
                if local_turns < LOCAL_TURNS {
                    continue;
                }
                local_turns = 0;
                match self.rx.try_recv() {
                    Ok(msg) => {
                        if self.handle(msg) {
                            return Ok(());
                        }
                    }
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
                continue;
            };
            local_turns = 0;
            let msg = match deadline {
                Some(at) => match self.rx.recv_timeout(at.saturating_duration_since(now)) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                },
                None => match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => return Ok(()),
                },
            };
            if self.handle(msg) {
                return Ok(());
            }
        }
    }

    /// Hands an inbox message to the engine; true for the shutdown request.
    fn handle(&mut self, msg: CoreMsg) -> bool {
        match msg {
            CoreMsg::Message { from, message } => self.engine.handle_message(from, message),
            CoreMsg::Net(event) => self.engine.on_net(event),
            CoreMsg::Wake => self.engine.wake(),
            CoreMsg::Shutdown => return true,
        }
        false
    }
}
