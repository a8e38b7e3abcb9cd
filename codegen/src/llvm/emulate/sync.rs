//! Where the threads of one emulated GPU block meet: the block's barrier (`bar.sync`,
//! `s_barrier`), the exchanges of a warp, wavefront or warpgroup (shuffles and matrix
//! instructions, which read other lanes' registers), and the end of the block.
//!
//! Every thread of a block is an OS thread. A meeting releases when all the threads it needs
//! have arrived; until then they sleep. When every thread of the block is waiting and no
//! meeting can release (threads at different barriers, or some done while others wait), the
//! block can never finish on a GPU either: the block fails with a description of where each
//! thread waits, every wait returns at once, and the kernel runs to its end with
//! meaningless values (code emulated by JIT cannot be unwound).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// A place threads meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Meeting {
    /// The block's barrier: every thread.
    Barrier,
    /// The `size` threads from `first` (a warp, wavefront or warpgroup) exchanging values at
    /// instruction `site` (the operation's number in its module). `partial`: the lanes that
    /// wait elsewhere (at a barrier, at another instruction, done) are inactive and do not take
    /// part — an AMD wavefront's execution mask; otherwise every lane must come to the same
    /// instruction (NVIDIA's `.sync.aligned` instructions with a full mask).
    Group { first: u32, size: u32, partial: bool, site: u32 },
    /// The end of the block's kernel: every thread.
    Done,
}

impl Meeting {
    fn describe(self) -> String {
        match self {
            Meeting::Barrier => "the block's barrier".into(),
            Meeting::Group { first, size, .. } => {
                format!("a {size}-lane exchange of threads {first}..{}", first + size)
            }
            Meeting::Done => "the end of the kernel".into(),
        }
    }

    /// The threads the meeting is for.
    fn threads(self, block: u32) -> std::ops::Range<u32> {
        match self {
            Meeting::Group { first, size, .. } => first..first + size,
            Meeting::Barrier | Meeting::Done => 0..block,
        }
    }
}

/// The values of one round of an exchange, by lane: `None` for a lane that did not take part.
pub type Exchanged = Vec<Option<Vec<u64>>>;

/// How far a meeting has come: arrivals and values of the round being filled, rounds
/// released, and the values of the last two released rounds (a round's values stay readable
/// while the next fills).
#[derive(Default)]
struct Gate {
    arrived: u32,
    filling: Exchanged,
    round: u64,
    released: [Exchanged; 2],
}

struct State {
    waiting: u32,
    at: Vec<Option<Meeting>>,
    gates: HashMap<Meeting, Gate>,
    failure: Option<String>,
}

impl State {
    /// Whether `meeting` can release: everyone it needs has come (a partial exchange: every
    /// lane waits somewhere, and some wait here).
    fn complete(&self, meeting: Meeting, block: u32) -> bool {
        let gate = &self.gates[&meeting];
        match meeting {
            Meeting::Group { partial: true, .. } => {
                gate.arrived > 0 && meeting.threads(block).all(|t| self.at[t as usize].is_some())
            }
            _ => gate.arrived as usize == meeting.threads(block).len(),
        }
    }

    /// Releases every meeting that can; returns the meetings released.
    fn release_ready(&mut self, block: u32) -> Vec<Meeting> {
        let mut released = Vec::new();
        loop {
            let mut ready: Vec<Meeting> = self
                .gates
                .iter()
                .filter(|(_, g)| g.arrived > 0)
                .map(|(m, _)| *m)
                .filter(|m| self.complete(*m, block))
                .collect();
            if ready.is_empty() {
                return released;
            }
            ready.sort_by_key(|m| format!("{m:?}"));
            for m in ready {
                let gate = self.gates.get_mut(&m).expect("a ready gate");
                let slot = (gate.round % 2) as usize;
                gate.released[slot] = std::mem::take(&mut gate.filling);
                gate.arrived = 0;
                gate.round += 1;
                for t in m.threads(block) {
                    if self.at[t as usize] == Some(m) {
                        self.at[t as usize] = None;
                        self.waiting -= 1;
                    }
                }
                released.push(m);
            }
        }
    }
}

/// The meeting places of one block of `threads` threads.
pub struct BlockSync {
    threads: u32,
    /// Counts the block-wide meetings released (barriers and block ends): shared-memory
    /// accesses in one epoch are unordered between threads ([`super::races`]).
    epoch: AtomicU64,
    state: Mutex<State>,
    /// Sleepers by the first thread of their meeting (0 for the block-wide ones).
    wakers: Vec<Condvar>,
}

impl BlockSync {
    /// The meeting places of a block of `threads` threads, counting barrier epochs from
    /// `epoch` (one after the last epoch of the device's previous launch, so that the
    /// shared-memory shadow never mistakes an old access for a new one).
    pub fn new(threads: u32, epoch: u64) -> BlockSync {
        BlockSync {
            threads,
            epoch: AtomicU64::new(epoch),
            state: Mutex::new(State {
                waiting: 0,
                at: vec![None; threads as usize],
                gates: HashMap::new(),
                failure: None,
            }),
            wakers: (0..threads).map(|_| Condvar::new()).collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current barrier epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Starts a new epoch (a new block whose threads run one after another).
    pub fn next_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Why the block failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// Fails the block (the first failure is kept) and wakes every waiting thread.
    pub fn fail(&self, why: String) {
        let mut s = self.lock();
        s.failure.get_or_insert(why);
        drop(s);
        for w in &self.wakers {
            w.notify_all();
        }
    }

    /// Thread `tid` arrives at `meeting`, bringing `values` (for an exchange); returns, once
    /// the meeting releases, the values every participant brought (by lane in the meeting),
    /// or `None` when the block has failed.
    pub fn meet(&self, tid: u32, meeting: Meeting, values: Vec<u64>) -> Option<Exchanged> {
        let lanes = meeting.threads(self.threads);
        let mut s = self.lock();
        if s.failure.is_some() {
            return None;
        }
        let gate = s.gates.entry(meeting).or_default();
        if gate.filling.len() != lanes.len() {
            gate.filling = vec![None; lanes.len()];
        }
        gate.filling[(tid - lanes.start) as usize] = Some(values);
        gate.arrived += 1;
        let round = gate.round;
        s.at[tid as usize] = Some(meeting);
        s.waiting += 1;
        let released = s.release_ready(self.threads);
        if released.iter().any(|m| matches!(m, Meeting::Barrier | Meeting::Done)) {
            self.next_epoch();
        }
        if s.waiting == self.threads && s.at[tid as usize].is_some() {
            let why = describe_deadlock(&s.at);
            drop(s);
            self.fail(why);
            return None;
        }
        if s.at[tid as usize].is_none() {
            // Released: wake the others after letting go of the lock (they need it).
            let out = s.gates[&meeting].released[(round % 2) as usize].clone();
            drop(s);
            for m in &released {
                self.wakers[m.threads(self.threads).start as usize].notify_all();
            }
            return Some(out);
        }
        if !released.is_empty() {
            drop(s);
            for m in &released {
                self.wakers[m.threads(self.threads).start as usize].notify_all();
            }
            s = self.lock();
            let gate = &s.gates[&meeting];
            if gate.round != round {
                return Some(gate.released[(round % 2) as usize].clone());
            }
        }
        loop {
            s = self.wakers[lanes.start as usize].wait(s).unwrap_or_else(|e| e.into_inner());
            if s.failure.is_some() {
                return None;
            }
            let gate = &s.gates[&meeting];
            if gate.round != round {
                return Some(gate.released[(round % 2) as usize].clone());
            }
        }
    }
}

/// Which threads wait where, as runs of consecutive threads.
fn describe_deadlock(at: &[Option<Meeting>]) -> String {
    let mut out = String::from("the block can never finish: every thread waits and no meeting can complete (");
    let mut start = 0;
    for i in 1..=at.len() {
        if i == at.len() || at[i] != at[start] {
            let place = at[start].map(Meeting::describe).unwrap_or_else(|| "nowhere".into());
            let _ = write!(out, "{}threads {start}..{i} at {place}", if start == 0 { "" } else { "; " });
            start = i;
        }
    }
    out.push(')');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_exchange_gives_every_lane_everyones_values() {
        let sync = Arc::new(BlockSync::new(8, 1));
        let handles: Vec<_> = (0..8u32)
            .map(|t| {
                let sync = sync.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for round in 0..3u64 {
                        let group = Meeting::Group { first: t / 4 * 4, size: 4, partial: false, site: 0 };
                        let all = sync.meet(t, group, vec![u64::from(t) * 10 + round]).unwrap();
                        seen.push(all.iter().map(|v| v.as_ref().unwrap()[0]).collect::<Vec<_>>());
                        sync.meet(t, Meeting::Barrier, Vec::new()).unwrap();
                    }
                    sync.meet(t, Meeting::Done, Vec::new()).unwrap();
                    seen
                })
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            let seen = h.join().unwrap();
            let base = (t / 4 * 4) as u64;
            for (round, values) in seen.iter().enumerate() {
                let want: Vec<u64> = (base..base + 4).map(|l| l * 10 + round as u64).collect();
                assert_eq!(values, &want);
            }
        }
        assert_eq!(sync.failure(), None);
    }

    #[test]
    fn a_partial_exchange_goes_ahead_without_the_lanes_waiting_elsewhere() {
        let sync = Arc::new(BlockSync::new(8, 1));
        let handles: Vec<_> = (0..8u32)
            .map(|t| {
                let sync = sync.clone();
                std::thread::spawn(move || {
                    // Lanes 0..3 of each group of 8 exchange; the others are done.
                    let got = (t % 8 < 3).then(|| {
                        let group = Meeting::Group { first: 0, size: 8, partial: true, site: 0 };
                        sync.meet(t, group, vec![u64::from(t)]).unwrap()
                    });
                    sync.meet(t, Meeting::Done, Vec::new()).unwrap();
                    got
                })
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            if let Some(all) = h.join().unwrap() {
                assert!(t < 3);
                let present: Vec<Option<u64>> = all.iter().map(|v| v.as_ref().map(|v| v[0])).collect();
                assert_eq!(present, [Some(0), Some(1), Some(2), None, None, None, None, None]);
            }
        }
        assert_eq!(sync.failure(), None);
    }

    #[test]
    fn threads_that_never_meet_fail_the_block_instead_of_hanging() {
        let sync = Arc::new(BlockSync::new(4, 1));
        let handles: Vec<_> = (0..4u32)
            .map(|t| {
                let sync = sync.clone();
                std::thread::spawn(move || {
                    // Threads 2 and 3 skip the barrier (a barrier under divergent control flow).
                    if t < 2 {
                        sync.meet(t, Meeting::Barrier, Vec::new());
                    }
                    sync.meet(t, Meeting::Done, Vec::new())
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap().is_none());
        }
        let why = sync.failure().unwrap();
        assert!(
            why.contains("threads 0..2 at the block's barrier") && why.contains("threads 2..4 at the end"),
            "{why}"
        );
    }
}
