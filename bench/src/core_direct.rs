//! Setup (a): the core driven directly. One thread per replica, `Message` values over std
//! channels, every `Persist` acknowledged at once, an 8-byte payload (the produce time), no
//! app state; latency from the produce call to the commit at replica 0.

use crate::stats::{since_stamp, stamp, CpuWindow, Recorder, Sample};
use hotstuff_core::{
    Action, AppOutcome, ChainId, Config, DefaultPacemaker, Input, Keypair, Message, PublicKey, Recovered,
    Replica, SyncTimer, ValidatorSet, View,
};
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

const CHAIN: ChainId = ChainId(7);

/// A message from a peer, or `None`: stop.
type Ev = Option<(PublicKey, Message)>;

pub fn keys(n: usize) -> Vec<Keypair> {
    (0..n)
        .map(|i| {
            let mut seed = [0xA5u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            Keypair::from_secret(&seed)
        })
        .collect()
}

/// Runs n replicas for `warmup + measure` and returns what replica 0 saw in `measure`.
pub fn run(n: usize, warmup: Duration, measure: Duration) -> Sample {
    let keys = keys(n);
    let pks: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
    let validators = ValidatorSet::new(pks.iter().map(|pk| (*pk, 1))).expect("validator set");
    let mut senders = HashMap::new();
    let mut receivers = Vec::new();
    for pk in &pks {
        let (tx, rx) = channel();
        senders.insert(*pk, tx);
        receivers.push(rx);
    }
    let base = Instant::now();
    let mut handles = Vec::new();
    for (i, (key, rx)) in keys.into_iter().zip(receivers).enumerate() {
        let replica = Replica::new(
            Config::new(CHAIN),
            key,
            DefaultPacemaker::round_robin(),
            Recovered::genesis(CHAIN, validators.clone()),
        )
        .expect("replica");
        let senders = senders.clone();
        let me = pks[i];
        handles.push(thread::spawn(move || drive(replica, me, rx, senders, base, i == 0)));
    }
    thread::sleep(warmup);
    let cpu = CpuWindow::start();
    let from = Instant::now();
    thread::sleep(measure);
    let to = Instant::now();
    let cpu = cpu.pct();
    for tx in senders.values() {
        let _ = tx.send(None);
    }
    let mut sample = Sample::default();
    for (i, h) in handles.into_iter().enumerate() {
        let rec = h.join().expect("replica thread");
        if i == 0 {
            sample = rec.sample(from, to, cpu);
        }
    }
    sample
}

fn drive(
    mut replica: Replica,
    me: PublicKey,
    rx: Receiver<Ev>,
    peers: HashMap<PublicKey, Sender<Ev>>,
    base: Instant,
    record: bool,
) -> Recorder {
    let mut rec = Recorder::default();
    let mut view_timer: Option<(View, Instant)> = None;
    let mut sync_timers: Vec<(SyncTimer, Instant)> = Vec::new();
    let mut inputs: VecDeque<Input> = VecDeque::new();
    loop {
        // Act on everything the replica has queued, feeding local answers straight back.
        loop {
            while let Some(action) = replica.poll_action() {
                match action {
                    Action::Persist { seq, .. } => inputs.push_back(Input::Persisted { seq }),
                    Action::Send { to, message } => {
                        if let Some(tx) = peers.get(&to) {
                            let _ = tx.send(Some((me, message)));
                        }
                    }
                    Action::Broadcast { message } => {
                        for (pk, tx) in &peers {
                            if *pk != me {
                                let _ = tx.send(Some((me, message.clone())));
                            }
                        }
                    }
                    Action::SetTimer { view, after } => view_timer = Some((view, Instant::now() + after)),
                    Action::SetSyncTimer { timer, after } => {
                        sync_timers.retain(|(t, _)| *t != timer);
                        sync_timers.push((timer, Instant::now() + after));
                    }
                    Action::ProduceBlock { view, parent, .. } => inputs.push_back(Input::BlockProduced {
                        view,
                        parent,
                        payload: stamp(base).to_vec(),
                        outcome: AppOutcome::default(),
                    }),
                    Action::ValidateBlock { hash, .. } => {
                        inputs.push_back(Input::BlockValidated { hash, outcome: Some(AppOutcome::default()) })
                    }
                    Action::Commit { blocks } if record => {
                        let now = Instant::now();
                        for b in blocks {
                            if let Some(l) = since_stamp(base, now, &b.block.payload) {
                                rec.record(now, l);
                            }
                        }
                    }
                    _ => {}
                }
            }
            match inputs.pop_front() {
                Some(input) => {
                    let _ = replica.handle(input);
                }
                None => break,
            }
        }
        // Timers due?
        let now = Instant::now();
        if let Some((view, at)) = view_timer {
            if at <= now {
                view_timer = None;
                let _ = replica.handle(Input::TimerFired { view });
                continue;
            }
        }
        if let Some(pos) = sync_timers.iter().position(|(_, at)| *at <= now) {
            let (timer, _) = sync_timers.swap_remove(pos);
            let _ = replica.handle(Input::SyncTimerFired { timer });
            continue;
        }
        let next = view_timer.iter().map(|(_, at)| *at).chain(sync_timers.iter().map(|(_, at)| *at)).min();
        let ev = match next {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(now)) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return rec,
            },
            None => match rx.recv() {
                Ok(ev) => ev,
                Err(_) => return rec,
            },
        };
        match ev {
            Some((from, message)) => {
                let _ = replica.handle(Input::Message { from, message });
            }
            None => return rec,
        }
    }
}
