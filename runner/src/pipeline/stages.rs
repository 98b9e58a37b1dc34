//! The running pipeline: one task per source and sink, one task per worker of each transform,
//! joined by bounded channels.
//!
//! ```text
//! source ──▶ [ transform worker 1 ] ──▶ [ worker 1 ] ──▶ sink
//!        ╲─▶ [ transform worker 2 ] ─╱ ╲─▶ [ worker 2 ] ─╱
//! ```
//!
//! Every batch carries the sequence number the source gave it. Workers of one transform take
//! batches from one queue, so batches can overtake each other; a sink that cares about order
//! (the file sinks) puts them back in sequence, and the others (Redis) write them as they come.
//! A batch a transform returns from `finish` sorts after every other.
//!
//! The first stage to fail sets a shared flag before it hangs up: the stages after it then stop
//! without calling `finish`, and the stages before it see their channel close and stop. The
//! sink stage only writes: once every stage is done, the pipeline commits the sink when all of
//! them succeeded and no signal came, and aborts it otherwise, so a failed or stopped run never
//! publishes its output.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::{Mutex, mpsc};

use crate::batch::{Batch, Schema, schema_change};
use crate::format::cut;
use crate::report::Counts;
use crate::step::{
    Acks, BatchRefused, Checkpoints, Policy, Progress, Rejected, RowError, Sink, Source, Transform, reject_batch,
    row_json,
};

/// Batches buffered between two stages, per worker of the stage that reads them.
pub const CHANNEL_BATCHES: usize = 2;

/// A batch and its place in the source's order.
pub struct Sequenced {
    seq: u64,
    /// The source's split it came from (its index among the splits this run reads), when the
    /// source says ([`Source::split`]); none for what transforms return from `finish`.
    split: Option<usize>,
    batch: Batch,
}

/// A planned run's progress through its splits, for its checkpoints: which splits the source
/// has finished (it has gone on to a later one, or ended), how many batches of each it sent,
/// and how many of those the sink has written. A split is done when the source has finished
/// it and the sink has written all its batches; with a sink that acknowledges rows as it goes
/// (Redis), the sink stage then waits for the acknowledgements and records the split.
pub struct Checkpointing {
    pub checkpoints: Arc<Checkpoints>,
    /// The plan's index of each split this run reads, in reading order.
    pub splits: Vec<usize>,
    /// Whether splits are recorded one by one as they are acknowledged (the sink acknowledges
    /// rows as it goes, and no step writes rejected rows to a dead letter, which publishes
    /// them only when the run commits); otherwise only the whole shard, once committed.
    each_split: AtomicBool,
    state: std::sync::Mutex<Tracked>,
}

#[derive(Default)]
struct Tracked {
    sent: Vec<u64>,
    written: Vec<u64>,
    recorded: Vec<bool>,
    /// Splits before this one are finished by the source.
    finished: usize,
}

impl Checkpointing {
    pub fn new(checkpoints: Arc<Checkpoints>, splits: Vec<usize>) -> Checkpointing {
        let n = splits.len();
        let state = Tracked { sent: vec![0; n], written: vec![0; n], recorded: vec![false; n], finished: 0 };
        Checkpointing { checkpoints, splits, each_split: AtomicBool::new(false), state: std::sync::Mutex::new(state) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Tracked> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn record_each_split(&self, each: bool) {
        self.each_split.store(each, Ordering::SeqCst);
    }

    /// The source sent a batch of `split`: the splits before it are finished.
    fn sent(&self, split: Option<usize>) {
        let Some(split) = split else { return };
        let mut state = self.state();
        if let Some(sent) = state.sent.get_mut(split) {
            *sent += 1;
            state.finished = state.finished.max(split);
        }
    }

    /// The source read everything: every split is finished.
    fn source_ended(&self) {
        let mut state = self.state();
        state.finished = state.sent.len();
    }

    /// The sink wrote a batch of `split`; returns the plan's indices of the splits that are now
    /// done and not yet recorded (marked recorded: the caller records them or fails the run).
    fn written(&self, split: Option<usize>) -> Vec<usize> {
        let mut state = self.state();
        if let Some(written) = split.and_then(|split| state.written.get_mut(split)) {
            *written += 1;
        }
        if !self.each_split.load(Ordering::SeqCst) {
            return Vec::new();
        }
        let mut done = Vec::new();
        for i in 0..state.finished.min(state.sent.len()) {
            if !state.recorded[i] && state.written[i] == state.sent[i] {
                state.recorded[i] = true;
                done.push(self.splits[i]);
            }
        }
        done
    }
}

/// The sequence numbers of what transforms return from `finish`: after everything else.
const FINISH_SEQ: u64 = 1 << 62;

/// What a stage (the source, a transform's workers, the sink) did, and how it ended.
pub type StageOutcome = (Counts, anyhow::Result<()>);

/// A transform's or sink's name (for rejected rows) and error policy.
#[derive(Clone)]
pub struct StepPolicy {
    pub name: String,
    pub policy: Policy,
}

/// A stage's outcome; marks the run as failed when `result` is an error.
fn outcome(counts: Counts, result: anyhow::Result<()>, failed: &AtomicBool) -> StageOutcome {
    if result.is_err() {
        failed.store(true, Ordering::SeqCst);
    }
    (counts, result)
}

/// Asks a run to stop: set by the first SIGINT or SIGTERM (the binary watches for signals and
/// calls [`Stop::request`]). The source stops reading, the batches already read go through to
/// the sink, the sink is aborted (nothing is committed: no file renamed into place, no upload
/// completed), and the run reports what it did and fails with [`Interrupted`]. A run still
/// opening its steps stops at once. Once the sink has begun to commit (every row is read and
/// settled), a stop no longer interrupts it: the run finishes.
#[derive(Debug, Default)]
pub struct Stop {
    /// The first signal, and whether the sink has begun to commit: one lock, so that a signal
    /// and the start of the commit are ordered (either the run stops, or it commits).
    state: std::sync::Mutex<StopState>,
    /// Wakes [`Stop::signalled`] (a permit is kept if nobody waits yet).
    notify: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct StopState {
    signal: Option<&'static str>,
    committing: bool,
}

/// The run was stopped by a signal.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted by {0}: stopped reading and committed nothing (rows a store such as Redis acknowledged stay \
     there; file outputs and uploads were discarded)"
)]
pub struct Interrupted(pub &'static str);

impl Stop {
    fn state(&self) -> std::sync::MutexGuard<'_, StopState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks the run to stop, because of `signal` (`SIGINT`, `SIGTERM`); the first request counts.
    /// Returns `false` when the run is already committing its output, which it then finishes.
    pub fn request(&self, signal: &'static str) -> bool {
        let mut state = self.state();
        if state.signal.is_none() {
            state.signal = Some(signal);
            self.notify.notify_one();
        }
        !state.committing
    }

    /// The sink begins to commit, unless a stop was asked for first (`false`): from now on a
    /// request no longer stops the run.
    pub fn begin_commit(&self) -> bool {
        let mut state = self.state();
        state.committing = state.signal.is_none();
        state.committing
    }

    /// The signal that stopped the run, if one did (before the commit began).
    pub fn signal(&self) -> Option<&'static str> {
        let state = self.state();
        state.signal.filter(|_| !state.committing)
    }

    /// Waits for the first request; returns its signal.
    pub async fn signalled(&self) -> &'static str {
        loop {
            if let Some(signal) = self.signal() {
                return signal;
            }
            self.notify.notified().await;
        }
    }
}

pub async fn source(
    mut source: Box<dyn Source>,
    tx: mpsc::Sender<Sequenced>,
    failed: Arc<AtomicBool>,
    stop: Arc<Stop>,
    progress: Arc<Progress>,
    tracking: Option<Arc<Checkpointing>>,
) -> StageOutcome {
    let mut counts = Counts::default();
    let result = async {
        for seq in 0.. {
            if stop.signal().is_some() {
                break;
            }
            let started = Instant::now();
            let batch = source.next_batch().await;
            counts.busy += started.elapsed();
            let Some(batch) = batch? else {
                if let Some(tracking) = &tracking {
                    tracking.source_ended();
                }
                break;
            };
            counts.batches += 1;
            counts.rows_out += batch.rows() as u64;
            progress.rows_read(batch.rows() as u64);
            let split = source.split();
            if let Some(tracking) = &tracking {
                tracking.sent(split);
            }
            if failed.load(Ordering::SeqCst) || tx.send(Sequenced { seq, split, batch }).await.is_err() {
                break; // downstream stopped; it reports why
            }
        }
        Ok(())
    }
    .await;
    outcome(counts, result, &failed)
}

/// Runs the workers of one transform over one shared queue; their counts add up.
pub async fn transform(
    workers: Vec<Box<dyn Transform>>,
    step: StepPolicy,
    rx: mpsc::Receiver<Sequenced>,
    tx: mpsc::Sender<Sequenced>,
    failed: Arc<AtomicBool>,
) -> StageOutcome {
    let rx = Arc::new(Mutex::new(rx));
    let schema = Arc::new(std::sync::Mutex::new(None));
    let tasks: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(index, worker)| {
            let shared = Shared {
                step: step.clone(),
                rx: rx.clone(),
                tx: tx.clone(),
                failed: failed.clone(),
                schema: schema.clone(),
            };
            tokio::spawn(transform_worker(index, worker, shared))
        })
        .collect();
    drop((rx, tx));
    let mut total = Counts::default();
    let mut first_error = None;
    for task in tasks {
        let (counts, result) = match task.await {
            Ok(stage) => stage,
            Err(e) => (Counts::default(), Err(anyhow::anyhow!("a transform worker panicked: {e}"))),
        };
        total.add(&counts);
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    (total, first_error.map_or(Ok(()), Err))
}

/// What the workers of one transform share.
struct Shared {
    step: StepPolicy,
    rx: Arc<Mutex<mpsc::Receiver<Sequenced>>>,
    tx: mpsc::Sender<Sequenced>,
    failed: Arc<AtomicBool>,
    /// The columns of the first batch out: every later batch must have the same.
    schema: Arc<std::sync::Mutex<Option<Schema>>>,
}

impl Shared {
    fn check_schema(&self, batch: &Batch) -> anyhow::Result<()> {
        if batch.columns().is_empty() {
            return Ok(()); // every row of its input was rejected
        }
        let schema = batch.schema();
        let mut first = self.schema.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &*first {
            None => *first = Some(schema),
            Some(first) => {
                if let Some(change) = schema_change(first, &schema) {
                    anyhow::bail!("its output changed shape between batches: {change}");
                }
            }
        }
        Ok(())
    }
}

async fn transform_worker(index: usize, mut worker: Box<dyn Transform>, shared: Shared) -> StageOutcome {
    let Shared { rx, tx, failed, .. } = &shared;
    let mut counts = Counts::default();
    let result = async {
        loop {
            // The lock is held only while waiting for the next batch, not while processing it.
            let next = rx.lock().await.recv().await;
            let Some(Sequenced { seq, split, batch }) = next else { break };
            if failed.load(Ordering::SeqCst) {
                return Ok(()); // another stage (or another worker) failed: stop
            }
            counts.batches += 1;
            counts.rows_in += batch.rows() as u64;
            let started = Instant::now();
            let output = process(&mut *worker, batch, &shared.step).await;
            counts.busy += started.elapsed();
            let output = output?;
            shared.check_schema(&output)?;
            counts.rows_out += output.rows() as u64;
            if tx.send(Sequenced { seq, split, batch: output }).await.is_err() {
                return Ok(());
            }
        }
        if failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let started = Instant::now();
        let rest = worker.finish().await;
        counts.busy += started.elapsed();
        if let Some(output) = rest? {
            shared.check_schema(&output)?;
            counts.rows_out += output.rows() as u64;
            let _ = tx.send(Sequenced { seq: FINISH_SEQ + index as u64, split: None, batch: output }).await;
        }
        Ok(())
    }
    .await;
    outcome(counts, result, failed)
}

/// Runs `process` under the step's policy. With `skip` or `dead-letter`, a row the step
/// refuses (a [`RowError`]) is rejected and the rest of the batch tried again; any other
/// failure rejects the whole batch, and the step recovers (a trapped plugin is replaced).
async fn process(worker: &mut dyn Transform, batch: Batch, step: &StepPolicy) -> anyhow::Result<Batch> {
    if !step.policy.tolerant() {
        return worker.process(batch).await;
    }
    let mut batch = batch;
    loop {
        match worker.process(batch.clone()).await {
            Ok(output) => return Ok(output),
            Err(e) => match e.downcast_ref::<RowError>() {
                Some(refused) if refused.row < batch.rows() => {
                    batch = reject_row(step, batch, refused).await?;
                    if batch.is_empty() {
                        return Ok(Batch::default());
                    }
                }
                _ => {
                    step.policy.reject(reject_batch(&step.name, &batch, &format!("{e:#}"))).await?;
                    worker.recover().await?;
                    return Ok(Batch::default());
                }
            },
        }
    }
}

/// Hands the row a step refused to the step's policy; returns the batch without it, to try again.
async fn reject_row(step: &StepPolicy, batch: Batch, refused: &RowError) -> anyhow::Result<Batch> {
    let row = row_json(&batch, refused.row);
    let rejected = Rejected { step: step.name.clone(), reason: refused.message.clone(), row, at: None };
    step.policy.reject(vec![rejected]).await?;
    Ok(batch.without_row(refused.row))
}

/// The sink stage: writes every batch that arrives (in the source's order when the sink asks
/// for it), then the batches transforms returned from `finish`. It does not end the sink:
/// [`Plan::run`](super::Plan) commits or aborts it once every stage is done, so the decision
/// is taken in one place, knowing how every stage ended.
pub async fn sink(
    mut sink: Box<dyn Sink>,
    step: StepPolicy,
    mut rx: mpsc::Receiver<Sequenced>,
    failed: Arc<AtomicBool>,
    progress: Arc<Progress>,
    tracking: Option<Arc<Checkpointing>>,
) -> (StageOutcome, Box<dyn Sink>) {
    let mut counts = Counts::default();
    let result = async {
        let ordered = sink.ordered();
        // Batches that arrived before one with a lower sequence number, when order matters.
        let mut waiting: BTreeMap<u64, (Option<usize>, Batch)> = BTreeMap::new();
        let mut next = 0;
        let mut settings = Writing { step: &step, counts: &mut counts, progress: &progress, tracking: &tracking };
        while let Some(Sequenced { seq, split, batch }) = rx.recv().await {
            if failed.load(Ordering::SeqCst) {
                return Ok(()); // another stage failed: the run commits nothing, write no more
            }
            settings.counts.batches += 1;
            settings.counts.rows_in += batch.rows() as u64;
            if !ordered {
                settings.write(&mut *sink, split, batch).await?;
                continue;
            }
            waiting.insert(seq, (split, batch));
            while let Some((split, batch)) = waiting.remove(&next) {
                settings.write(&mut *sink, split, batch).await?;
                next += 1;
            }
        }
        if failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        // What transforms returned from `finish`, in order.
        for (_, (split, batch)) in std::mem::take(&mut waiting) {
            settings.write(&mut *sink, split, batch).await?;
        }
        Ok(())
    }
    .await;
    (outcome(counts, result, &failed), sink)
}

/// What the sink stage writes with.
struct Writing<'a> {
    step: &'a StepPolicy,
    counts: &'a mut Counts,
    progress: &'a Progress,
    tracking: &'a Option<Arc<Checkpointing>>,
}

impl Writing<'_> {
    /// Writes a batch of `split`; when that was a split's last batch and the run records splits
    /// one by one, waits until the sink has acknowledged everything it took, then records the
    /// splits that are done (never before their rows are acknowledged).
    async fn write(&mut self, sink: &mut dyn Sink, split: Option<usize>, batch: Batch) -> anyhow::Result<()> {
        write(sink, batch, self.step, self.counts, self.progress).await?;
        let Some(tracking) = self.tracking else { return Ok(()) };
        let done = tracking.written(split);
        if done.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let acks = sink.flush().await;
        self.counts.busy += started.elapsed();
        settle(acks?, self.step, self.counts, self.progress).await?;
        tracking.checkpoints.record(&done).await
    }
}

/// Writes a batch under the sink's policy (as [`process`] does for transforms): a row the sink
/// refuses at once is rejected and the rest sent again; a batch it refuses whole is rejected;
/// any other failure fails the run, since the sink may have taken part of the batch.
async fn write(
    sink: &mut dyn Sink,
    mut batch: Batch,
    step: &StepPolicy,
    counts: &mut Counts,
    progress: &Progress,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(()); // every row was rejected upstream
    }
    loop {
        let started = Instant::now();
        let attempt = if step.policy.tolerant() { batch.clone() } else { std::mem::take(&mut batch) };
        let rows = attempt.rows() as u64;
        let written = sink.write(attempt).await;
        counts.busy += started.elapsed();
        let e = match written {
            Ok(acks) => {
                progress.rows_taken(rows);
                return settle(acks, step, counts, progress).await;
            }
            Err(e) if !step.policy.tolerant() => return Err(e),
            Err(e) => e,
        };
        if let Some(refused) = e.downcast_ref::<RowError>()
            && refused.row < batch.rows()
        {
            batch = reject_row(step, batch, refused).await?;
            if batch.is_empty() {
                return Ok(());
            }
        } else if e.downcast_ref::<BatchRefused>().is_some() {
            return step.policy.reject(reject_batch(&step.name, &batch, &format!("{e:#}"))).await;
        } else {
            return Err(e);
        }
    }
}

/// Takes in what a sink reported: acknowledged rows are written; refused rows go to the sink's
/// policy, each with its own reason (with `fail`, the first of them fails the run).
pub async fn settle(acks: Acks, step: &StepPolicy, counts: &mut Counts, progress: &Progress) -> anyhow::Result<()> {
    counts.rows_out += acks.rows;
    progress.rows_acknowledged(acks.rows);
    let Some(first) = acks.refused.first() else { return Ok(()) };
    if !step.policy.tolerant() {
        let others = match acks.refused.len() {
            1 => String::new(),
            n => format!(" (and {} more rows refused)", n - 1),
        };
        anyhow::bail!("the store refused a row: {}{others}; the row: {}", first.reason, cut(&first.row.to_string()));
    }
    let rejected = acks
        .refused
        .into_iter()
        .map(|refused| Rejected { step: step.name.clone(), reason: refused.reason, row: refused.row, at: None })
        .collect();
    step.policy.reject(rejected).await
}
