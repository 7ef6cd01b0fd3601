//! The std consensus loop: one thread that waits for the next input on the inbox channel (with
//! a deadline at the next timer) and runs the [`Engine`]'s turn.

use super::engine::{Engine, Ready};
use super::NodeError;
use crate::app::App;
use crate::error::StoreError;
use crate::net::{CoreMsg, Network};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Instant;

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
                // One inbox message per local turn, so that a node that always has local work
                // (a lone validator with a full mempool) still hears its peers and its
                // shutdown request.
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
