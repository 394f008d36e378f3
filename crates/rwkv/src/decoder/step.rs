//! The single-token step of [`Decoder`]: the layer code of `mix.rs` on one row, run by a team of
//! threads that stays together for the whole token ([`Team`], an [`Exec`]).
//!
//! A token's cost is streaming every weight once, and the products come one after another with
//! small serial parts between them (norms, LoRA activations, the WKV step). Forking and joining a
//! thread pool for each of the ~100 products lets the workers fall asleep between them; here the
//! threads are started once per token and meet at a spinning barrier after each product. Every
//! thread computes the small serial parts itself (the same arithmetic, so the same values), each
//! product's outputs are split between the threads by rows, and the WKV step by heads.
//!
//! # Shapes
//!
//! As [`Decoder::step_embedding`]: an embedding row `[C]` → logits `[V]`.

use std::cell::UnsafeCell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use visualrwkv_wkv::reference::Dims;

use super::mix::{self, Exec, Pool, Recurrence, Shift};
use super::{Decoder, HostLayerState, Matrix};
use crate::{LmDims, RwkvError};

/// Models reading fewer weight bytes than this per token are stepped by one thread (starting a
/// second costs tens of microseconds).
const TEAM_MIN_BYTES: usize = 8 << 20;

/// A barrier for a fixed team that spins briefly, then yields (so that an oversubscribed machine
/// still makes progress).
struct SpinBarrier {
    n: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl SpinBarrier {
    fn new(n: usize) -> Self {
        Self { n, arrived: AtomicUsize::new(0), generation: AtomicUsize::new(0) }
    }

    /// Returns once all `n` threads have called `wait` for this round. Everything a thread wrote
    /// before its call is visible to every thread after theirs.
    fn wait(&self) {
        if self.n == 1 {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if spins < 1 << 14 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// A buffer that the team writes by disjoint row ranges and reads whole, with a barrier between
/// any write and any read of the same elements.
struct Shared(Box<[UnsafeCell<f32>]>);

// SAFETY: access follows the protocol documented on `rows` / `read`: concurrent accesses touch
// disjoint elements, and a barrier (acquire/release) orders writes before reads.
unsafe impl Sync for Shared {}

impl Shared {
    fn new(len: usize) -> Self {
        Self((0..len).map(|_| UnsafeCell::new(0.0)).collect())
    }

    /// Elements `r` for writing.
    ///
    /// # Safety
    /// No other thread reads or writes elements of `r` until the next barrier.
    #[allow(clippy::mut_from_ref)]
    unsafe fn rows(&self, r: Range<usize>) -> &mut [f32] {
        let cells = &self.0[r];
        // SAFETY: `UnsafeCell<f32>` has the layout of `f32`; exclusivity as our contract.
        unsafe { std::slice::from_raw_parts_mut(UnsafeCell::raw_get(cells.as_ptr()), cells.len()) }
    }

    /// The whole buffer for reading.
    ///
    /// # Safety
    /// No thread writes the buffer until the next barrier.
    unsafe fn read(&self) -> &[f32] {
        // SAFETY: as our contract; same layout as above.
        unsafe { std::slice::from_raw_parts(UnsafeCell::raw_get(self.0.as_ptr()), self.0.len()) }
    }
}

/// One layer's state, shared by the team through raw pointers taken (once, on the calling
/// thread) from the `&mut HostLayerState`: the WKV state is written by heads (each head by one
/// thread), the shift rows by thread 0 only, after a barrier that follows every thread's last
/// read (the contract of [`Exec::store_shift`]).
#[derive(Clone, Copy)]
pub(super) struct SharedState {
    att_shift: *mut f32,
    wkv: *mut f32,
    ffn_shift: *mut f32,
    /// Length of the shift rows (C).
    c: usize,
}

// SAFETY: as documented on the struct; the pointers outlive the team (scoped threads) and the
// `&mut` they come from is not used while the team runs.
unsafe impl Sync for SharedState {}
unsafe impl Send for SharedState {}

impl SharedState {
    fn new(s: &mut HostLayerState) -> Self {
        Self {
            att_shift: s.att_shift.as_mut_ptr(),
            wkv: s.wkv.as_mut_ptr(),
            ffn_shift: s.ffn_shift.as_mut_ptr(),
            c: s.att_shift.len(),
        }
    }

    fn shift_ptr(&self, which: Shift) -> *mut f32 {
        match which {
            Shift::TimeMix => self.att_shift,
            Shift::ChannelMix => self.ffn_shift,
        }
    }
}

/// Output buffers the team exchanges results through: two sets (a pass alternates between them,
/// so a thread writing the next result never meets one still copying the last) of five slots,
/// the first wide enough for the logits.
struct Slots([[Shared; 5]; 2]);

impl Slots {
    /// Slots for a pass of `dec`: as wide as its widest product (the head's vocabulary first).
    fn new(dec: &Decoder) -> Self {
        let wide = dec.blocks.matrices().map(|m| m.out).chain([dec.dims.n_embd]).max().unwrap_or(0);
        let set = || std::array::from_fn(|j| Shared::new(if j == 0 { wide.max(dec.dims.vocab_size) } else { wide }));
        Self([set(), set()])
    }
}

/// Rows `0..len` split evenly among `n` threads: thread `tid`'s range.
fn part(len: usize, tid: usize, n: usize) -> Range<usize> {
    (len * tid / n)..(len * (tid + 1) / n)
}

/// Thread `tid` of a team of `n` as an [`Exec`] for one row.
struct Team<'a> {
    tid: usize,
    n: usize,
    barrier: &'a SpinBarrier,
    slots: &'a Slots,
    /// Set by any thread whose WKV step failed, read by all after the barrier.
    failed: &'a AtomicBool,
    /// Results exchanged so far (picks the slot set).
    round: usize,
    pool: Pool,
}

impl Team<'_> {
    /// Writes this thread's part of up to five results (`write` gets the slots), waits for the
    /// team, and returns copies of the whole results of lengths `lens`.
    fn exchange<const K: usize>(&mut self, lens: [usize; K], write: impl FnOnce(&[Shared; 5])) -> [Vec<f32>; K] {
        let set = &self.slots.0[self.round % 2];
        self.round += 1;
        write(set);
        self.barrier.wait();
        std::array::from_fn(|j| {
            let mut v = self.pool.take(lens[j]);
            // SAFETY: every thread finished writing this set before the barrier above; the set is
            // written again only after the next exchange's barrier, which this thread reaches
            // after this copy.
            v.copy_from_slice(&unsafe { set[j].read() }[..lens[j]]);
            v
        })
    }
}

impl Exec for Team<'_> {
    type State = SharedState;

    fn pool(&mut self) -> &mut Pool {
        &mut self.pool
    }

    fn products<const K: usize>(&mut self, t: usize, jobs: [(&Matrix, &[f32]); K]) -> [Vec<f32>; K] {
        debug_assert_eq!(t, 1, "the team steps one row");
        let (tid, n) = (self.tid, self.n);
        self.exchange(jobs.map(|(m, _)| m.out), |set| {
            for ((m, x), slot) in jobs.iter().zip(set) {
                let r = part(m.out, tid, n);
                // Quantised matrices quantise `x` in every thread: the copies run side by side,
                // so sharing one would only add a barrier. SAFETY: the threads' row ranges are
                // disjoint and read only after the barrier.
                m.matvec_rows(x, r.clone(), unsafe { slot.rows(r) });
            }
        })
    }

    fn rows(&self, buf: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
        buf.chunks_mut(width).enumerate().for_each(|(i, row)| f(i, row));
    }

    fn previous_rows<'s>(&self, s: &'s SharedState, which: Shift, x: &'s [f32], c: usize) -> Vec<&'s [f32]> {
        // SAFETY: written (by thread 0, `store_shift`) only after a barrier that follows every
        // thread's last read in this step.
        let carried = unsafe { std::slice::from_raw_parts(s.shift_ptr(which), s.c) };
        mix::carried_then_rows(carried, x, c)
    }

    fn store_shift(&self, s: &mut SharedState, which: Shift, x: &[f32], c: usize) {
        if self.tid == 0 {
            // SAFETY: as `previous_rows`; the contract of `Exec::store_shift` places a barrier
            // between every thread's read and this write.
            unsafe { std::slice::from_raw_parts_mut(s.shift_ptr(which), s.c).copy_from_slice(&x[x.len() - c..]) };
        }
    }

    fn wkv(&mut self, s: &mut SharedState, d: &LmDims, t: usize, x: Recurrence<'_>) -> Result<Vec<f32>, RwkvError> {
        debug_assert_eq!(t, 1, "the team steps one row");
        let (h, hs) = (d.n_head, d.head_size);
        let heads = part(h, self.tid, self.n);
        let p = heads.start * hs..heads.end * hs;
        let mut result = Ok(());
        let failed = self.failed;
        let [y] = self.exchange([h * hs], |set| {
            if heads.is_empty() {
                return;
            }
            // SAFETY: heads `heads` of the WKV state and of the output belong to this thread only
            // in this exchange (`HostState::check_for` guaranteed the state's length H·N·N).
            let (state, y) = unsafe {
                (
                    std::slice::from_raw_parts_mut(s.wkv.add(heads.start * hs * hs), heads.len() * hs * hs),
                    set[0].rows(p.clone()),
                )
            };
            result = x.heads(p.clone()).run(Dims::new(1, 1, heads.len(), hs), state, y);
            if result.is_err() {
                failed.store(true, Ordering::Release);
            }
        });
        result?;
        if failed.load(Ordering::Acquire) {
            return Err(RwkvError::Shape {
                what: "WKV state of a team step".into(),
                expected: vec![h, hs, hs],
                found: vec![],
            });
        }
        Ok(y)
    }
}

impl Decoder {
    /// The team size for one step of this model: [`Decoder::set_threads`] if set, else one
    /// thread for small models and rayon's thread count (at most the cores) otherwise.
    fn team_size(&self) -> usize {
        if let Some(n) = self.threads {
            return n.max(1);
        }
        let cores = visualrwkv_wkv::cpu::cores();
        if self.bytes_per_token() < TEAM_MIN_BYTES { 1 } else { rayon::current_num_threads().min(cores).max(1) }
    }

    /// One step from the embedding row `x` `[C]` (before `ln0`); `states` has one entry per
    /// layer (checked by the caller). Returns the logits `[V]`.
    pub(super) fn step_team(&self, x: &[f32], states: &mut [HostLayerState]) -> Result<Vec<f32>, RwkvError> {
        let n = self.team_size();
        let slots = Slots::new(self);
        let barrier = SpinBarrier::new(n);
        let failed = AtomicBool::new(false);
        let layers: Vec<SharedState> = states.iter_mut().map(SharedState::new).collect();
        let program = |tid: usize| {
            let mut team =
                Team { tid, n, barrier: &barrier, slots: &slots, failed: &failed, round: 0, pool: Pool::default() };
            mix::forward(&mut team, self, x, &mut layers.clone(), &[], mix::Head::Last)
        };
        if n == 1 {
            return program(0);
        }
        std::thread::scope(|scope| {
            for tid in 1..n {
                scope.spawn(move || program(tid));
            }
            program(0)
        })
    }
}
