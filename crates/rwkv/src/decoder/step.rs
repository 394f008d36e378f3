//! The single-token step of [`Decoder`], run by a team of threads that stays together for the
//! whole token.
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
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Decoder, HostLayerState, Layer, Matrix, norm_in_place, sigmoid, tanh};
use crate::{LN_X_EPS, RwkvConfig};

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
/// read.
struct SharedState {
    att_shift: *mut f32,
    wkv: *mut f32,
    ffn_shift: *mut f32,
    /// `C`.
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
}

/// The outputs of the products of one step.
struct Buffers {
    lora: Shared,
    mixed: [Shared; 5],
    r: Shared,
    k: Shared,
    v: Shared,
    g: Shared,
    dec: Shared,
    w: Shared,
    y: Shared,
    out: Shared,
    ffn_k: Shared,
    ffn_r: Shared,
    ffn_v: Shared,
    logits: Shared,
}

/// Runs this thread's rows of each `(W, x, y)` product, then waits at the team's barrier.
type Products<'a> = dyn Fn(&[(&Matrix, &[f32], &Shared)]) + 'a;

/// Rows `0..len` split evenly among `n` threads: thread `tid`'s range.
fn part(len: usize, tid: usize, n: usize) -> Range<usize> {
    (len * tid / n)..(len * (tid + 1) / n)
}

impl Decoder {
    /// The team size for one step of this model: [`Decoder::set_threads`] if set, else one
    /// thread for small models and rayon's thread count (at most the cores) otherwise.
    fn team_size(&self) -> usize {
        if let Some(n) = self.threads {
            return n.max(1);
        }
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        if self.bytes_per_token() < TEAM_MIN_BYTES { 1 } else { rayon::current_num_threads().min(cores).max(1) }
    }

    /// One step from the `ln0`-normalised row `x` `[C]`; `states` has one entry per layer
    /// (checked by the caller). Returns the logits `[V]`.
    pub(super) fn step_team(&self, x: &[f32], states: &mut [HostLayerState]) -> Vec<f32> {
        let RwkvConfig { n_embd: c, dim_ffn: f, d_mix, d_decay, vocab_size: vocab, .. } = self.config;
        let n = self.team_size();
        let bufs = Buffers {
            lora: Shared::new(5 * d_mix),
            mixed: std::array::from_fn(|_| Shared::new(c)),
            r: Shared::new(c),
            k: Shared::new(c),
            v: Shared::new(c),
            g: Shared::new(c),
            dec: Shared::new(d_decay),
            w: Shared::new(c),
            y: Shared::new(c),
            out: Shared::new(c),
            ffn_k: Shared::new(f),
            ffn_r: Shared::new(c),
            ffn_v: Shared::new(c),
            logits: Shared::new(vocab),
        };
        let barrier = SpinBarrier::new(n);
        let layers: Vec<SharedState> = states.iter_mut().map(SharedState::new).collect();
        let program = |tid: usize| self.program(tid, n, x, &layers, &bufs, &barrier);
        if n == 1 {
            program(0);
        } else {
            std::thread::scope(|scope| {
                for tid in 1..n {
                    scope.spawn(move || program(tid));
                }
                program(0);
            });
        }
        // SAFETY: the team has finished (scope joined).
        unsafe { bufs.logits.read() }.to_vec()
    }

    /// What thread `tid` of a team of `n` runs for one step.
    fn program(&self, tid: usize, n: usize, x0: &[f32], layers: &[SharedState], b: &Buffers, barrier: &SpinBarrier) {
        // `y = W·x` for this thread's rows of each product, then the barrier.
        let products = |jobs: &[(&Matrix, &[f32], &Shared)]| {
            for (m, x, y) in jobs {
                let r = part(m.out, tid, n);
                // SAFETY: the threads' row ranges are disjoint; the buffer is read only after
                // the barrier below, and written again only after later barriers.
                m.matvec_rows(x, r.clone(), unsafe { y.rows(r) });
            }
            barrier.wait();
        };
        let mut x = x0.to_vec();
        for (l, state) in self.layers.iter().zip(layers) {
            self.time_mix_team(l, &mut x, state, tid, n, b, barrier, &products);
            self.channel_mix_team(l, &mut x, state, tid, b, &products);
        }
        let xo = self.ln_out.apply(&x);
        products(&[(&self.head, &xo, &b.logits)]);
    }

    #[allow(clippy::too_many_arguments)]
    fn time_mix_team(
        &self,
        l: &Layer,
        x: &mut [f32],
        state: &SharedState,
        tid: usize,
        n: usize,
        b: &Buffers,
        barrier: &SpinBarrier,
        products: &Products,
    ) {
        let RwkvConfig { n_embd: c, n_head: h, head_size: hs, d_mix, .. } = self.config;
        let xa = l.ln1.apply(x);
        // SAFETY: the shift row is read here by every thread and written by thread 0 only after
        // the next barrier.
        let shift = unsafe { std::slice::from_raw_parts(state.att_shift, state.c) };
        let dx: Vec<f32> = shift.iter().zip(&xa).map(|(p, v)| p - v).collect();
        let xxx: Vec<f32> = xa.iter().zip(&dx).zip(&l.maa_x).map(|((v, d), m)| v + d * m).collect();
        products(&[(&l.maa_w1, &xxx, &b.lora)]);
        if tid == 0 {
            // SAFETY: every thread has passed its read of the shift row (barrier above); no thread
            // touches this layer's shift row again during this step.
            unsafe { std::slice::from_raw_parts_mut(state.att_shift, state.c).copy_from_slice(&xa) };
        }
        // SAFETY (reads of shared buffers below): each is read after the barrier that ended its
        // product and before the next product that writes it.
        let lora: Vec<f32> = unsafe { b.lora.read() }.iter().map(|&v| tanh(v)).collect();
        let jobs: [(&Matrix, &[f32], &Shared); 5] =
            std::array::from_fn(|j| (&l.maa_w2[j], &lora[j * d_mix..(j + 1) * d_mix], &b.mixed[j]));
        products(&jobs);
        // Inputs of w, k, v, r, g: xa + dx * (lora_j · W2_j + maa_j).
        let mixed: [Vec<f32>; 5] = std::array::from_fn(|j| {
            let m = unsafe { b.mixed[j].read() };
            (0..c).map(|i| xa[i] + dx[i] * (m[i] + l.maa[j][i])).collect()
        });
        products(&[
            (&l.receptance, &mixed[3], &b.r),
            (&l.key, &mixed[1], &b.k),
            (&l.value, &mixed[2], &b.v),
            (&l.gate, &mixed[4], &b.g),
            (&l.decay_w1, &mixed[0], &b.dec),
        ]);
        let dec: Vec<f32> = unsafe { b.dec.read() }.iter().map(|&v| tanh(v)).collect();
        products(&[(&l.decay_w2, &dec, &b.w)]);
        let (r, k, v, g, w) = unsafe { (b.r.read(), b.k.read(), b.v.read(), b.g.read(), b.w.read()) };
        // The WKV step, group norm and gate, split by heads.
        for hh in part(h, tid, n) {
            let p = hh * hs..(hh + 1) * hs;
            let wd: Vec<f32> = w[p.clone()].iter().zip(&l.decay[p.clone()]).map(|(w, d)| w + d).collect();
            // SAFETY: head `hh` of the WKV state and of `y` belong to this thread only in this
            // phase; `y` is read after the barrier below.
            // (`HostState::check` guaranteed the WKV state's length `H·N·N`.)
            let (s, y) =
                unsafe { (std::slice::from_raw_parts_mut(state.wkv.add(hh * hs * hs), hs * hs), b.y.rows(p.clone())) };
            visualrwkv_wkv::reference::step_head(
                &r[p.clone()],
                &k[p.clone()],
                &v[p.clone()],
                &wd,
                &l.bonus[p.clone()],
                s,
                y,
            );
            norm_in_place(y, &l.ln_x.gamma[p.clone()], &l.ln_x.beta[p.clone()], LN_X_EPS as f32);
            for (y, g) in y.iter_mut().zip(&g[p]) {
                *y *= g * sigmoid(*g);
            }
        }
        barrier.wait();
        let y = unsafe { b.y.read() };
        products(&[(&l.output, y, &b.out)]);
        let out = unsafe { b.out.read() };
        x.iter_mut().zip(out).for_each(|(x, o)| *x += o);
    }

    #[allow(clippy::too_many_arguments)]
    fn channel_mix_team(
        &self,
        l: &Layer,
        x: &mut [f32],
        state: &SharedState,
        tid: usize,
        b: &Buffers,
        products: &Products,
    ) {
        let xf = l.ln2.apply(x);
        // SAFETY: read by every thread here, written by thread 0 after the next barrier.
        let shift = unsafe { std::slice::from_raw_parts(state.ffn_shift, state.c) };
        let mix = |m: &[f32]| -> Vec<f32> { xf.iter().zip(shift).zip(m).map(|((v, p), m)| v + (p - v) * m).collect() };
        let (xk, xr) = (mix(&l.ffn_maa_k), mix(&l.ffn_maa_r));
        products(&[(&l.ffn_key, &xk, &b.ffn_k), (&l.ffn_receptance, &xr, &b.ffn_r)]);
        if tid == 0 {
            // SAFETY: all reads of the shift row happened before the barrier above.
            unsafe { std::slice::from_raw_parts_mut(state.ffn_shift, state.c).copy_from_slice(&xf) };
        }
        let k: Vec<f32> = unsafe { b.ffn_k.read() }.iter().map(|&v| v.max(0.0) * v.max(0.0)).collect();
        products(&[(&l.ffn_value, &k, &b.ffn_v)]);
        let (r, val) = unsafe { (b.ffn_r.read(), b.ffn_v.read()) };
        for ((x, r), v) in x.iter_mut().zip(r).zip(val) {
            *x += sigmoid(*r) * v;
        }
    }
}
