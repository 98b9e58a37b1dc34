//! The `runner` command line: parses arguments, calls the library, maps outcomes to exit codes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use runner::builtin::Registry;
use runner::format::redact_url;
use runner::lookup::Stored;
use runner::metrics::{Metrics, Pusher};
use runner::pipeline::{Interrupted, Options, Plan, PlannedImplementation, Stop};
use runner::plugin::contract::{PACKAGE, spoken_versions};
use runner::plugin::{ComponentCache, EngineChecks, PluginRuntime};
use runner::spec::Role;
use runner::spec::{Spec, SpecError};
use runner::step::{Checkpoints, PLAN_VERSION, PlanFile, PlanMismatch, Shard, ShardPlan, spec_digest};
use tokio::runtime::Runtime;
use tracing_subscriber::EnvFilter;

/// jemalloc, not the system allocator: batches are built on one thread and freed on another,
/// which makes glibc's per-thread arenas fragment, so the resident size kept creeping up with
/// the length of a run (+26% from 1 to 4 million rows).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status when the run started but failed.
const EXIT_RUN_FAILED: u8 = 1;
/// Exit status when the spec (or a plugin it names) is invalid; clap uses it for bad usage too.
const EXIT_INVALID: u8 = 2;

/// Run ETL pipelines whose steps are built in or WebAssembly component plugins.
#[derive(Parser)]
#[command(
    name = "runner",
    version,
    after_help = "Exit status: 0 on success, 1 when a run fails, 2 when the spec or the command line is invalid,\n\
                  130 or 143 when SIGINT or SIGTERM stopped a run (a second signal abandons it at once).\n\
                  Logging: set RUST_LOG (e.g. RUST_LOG=debug); logs go to standard error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: stream every row from its source through its transforms to its sink,
    /// then print a summary to standard error.
    Run(RunArgs),
    /// Check a pipeline spec and the plugins it names, without reading any data.
    Validate(CommonArgs),
    /// Print how a sharded run cuts the input: each shard's splits (object, byte range,
    /// estimated rows), from the listing of the source's objects.
    Plan(PlanArgs),
    /// Print what the pipeline stored for one row: the row's key is computed from VALUES as the
    /// pipeline's `row-key` step computes it, then read from the pipeline's Redis sink.
    Lookup(LookupArgs),
    /// Write and examine plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin crate from a template, with a pipeline that runs it.
    New {
        /// The crate's name (lowercase letters, digits, `-`, `_`).
        name: String,
        /// Which step it implements.
        #[arg(long, value_enum)]
        kind: Kind,
        /// The directory to create it in: the crate is `DIR/NAME`.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Show which world and contract version a component implements, its imports, exports and
    /// size, and whether this runner can run it. Exit status 2 when it cannot.
    Inspect {
        /// The component (.wasm).
        wasm: PathBuf,
        /// Where compiled plugins are cached [default: $RUNNER_CACHE_DIR, else ~/.cache/etl-runner].
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    Source,
    Transform,
    Sink,
}

#[derive(Args)]
struct LookupArgs {
    #[command(flatten)]
    common: CommonArgs,

    /// The row's values for the key columns, in order (e.g. 5.1 3.5 1.4 0.2; negative numbers
    /// too; after `--`, any text).
    #[arg(required = true, allow_negative_numbers = true)]
    values: Vec<String>,

    /// Also print the key.
    #[arg(long)]
    show_key: bool,

    /// Take the columns' types from this plan file (`runner plan --out`) instead of reading the
    /// source's first rows: nothing of the input is read.
    #[arg(long, value_name = "PLAN")]
    plan: Option<String>,
}

#[derive(Args)]
struct CommonArgs {
    /// The pipeline spec, a TOML file.
    spec: PathBuf,

    /// A directory to look up `plugin = "name"` in, before the spec's `plugin_dir`. Repeatable.
    #[arg(long = "plugin-dir", value_name = "DIR")]
    plugin_dirs: Vec<PathBuf>,

    /// Where compiled plugins are cached [default: $RUNNER_CACHE_DIR, else ~/.cache/etl-runner].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,

    /// Compile plugins without reading or writing the cache.
    #[arg(long)]
    no_cache: bool,

    /// Show no progress: neither the progress line (drawn when standard output and standard
    /// error are terminals) nor, for `run`, the progress log lines (otherwise).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,

    /// Do not print the run summary (errors are still printed).
    #[arg(long, short)]
    quiet: bool,

    /// The summary's format: a table for people, or one line of JSON for scripts. Both go to
    /// standard error, after any log lines.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    report: ReportFormat,

    /// Run shard I of N: read only this shard's part of the input (0 <= I < N). Every shard
    /// plans the same splits from the spec alone; together, N shards read everything once.
    #[arg(long, value_name = "I/N", conflicts_with = "shards")]
    shard: Option<String>,

    /// Run one of N shards, its index taken from $JOB_COMPLETION_INDEX (what Kubernetes sets
    /// in each pod of an Indexed Job).
    #[arg(long, value_name = "N")]
    shards: Option<u32>,

    /// Run from this plan file (`runner plan --out`; a path or s3://): the shard lists and
    /// types nothing, and reads its own splits as the plan found them (an object changed since
    /// fails the run). The plan must be of this spec and this number of shards. The shard
    /// records the splits it has done (see --checkpoint), and a rerun skips them.
    #[arg(long, value_name = "PLAN")]
    plan: Option<String>,

    /// Where a planned shard records the splits it has done, and a rerun finds them (a folder
    /// or an s3:// prefix) [default: PLAN.checkpoints/ beside the plan file].
    #[arg(long, value_name = "URL", requires = "plan")]
    checkpoint: Option<String>,

    /// Forget the shard's checkpoints and read all of its splits again.
    #[arg(long, requires = "plan")]
    restart: bool,

    /// When standard output or standard error is not a terminal (no progress line), log a
    /// progress line every this many seconds: rows read, written and rejected, bytes, rate,
    /// ETA (`progress: key=value ...`; see docs/spec.md). 0 or --no-progress: none.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    progress_seconds: u64,

    /// Push the run's metrics to this Prometheus Pushgateway (http://host:9091), grouped by job
    /// (the pipeline's name) and shard, while it runs and when it ends (docs/spec.md, "Metrics").
    /// A push that fails is a warning.
    #[arg(long, value_name = "URL")]
    metrics: Option<String>,

    /// Seconds between pushes while the run goes (with --metrics).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    metrics_seconds: u64,
}

impl RunArgs {
    /// The shard this run reads: `--shard I/N`, `--shards N` with $JOB_COMPLETION_INDEX, or all.
    fn shard(&self) -> Result<Shard, String> {
        match (&self.shard, self.shards) {
            (Some(shard), _) => Shard::parse(shard).map_err(|e| format!("--shard {e}")),
            (None, Some(count)) => {
                let index = std::env::var("JOB_COMPLETION_INDEX").map_err(|_| {
                    "--shards needs the shard's index in $JOB_COMPLETION_INDEX (set in each pod of a Kubernetes \
                     Indexed Job); or give it with --shard I/N"
                        .to_string()
                })?;
                let index: u32 =
                    index.trim().parse().map_err(|_| format!("$JOB_COMPLETION_INDEX is not a number: `{index}`"))?;
                Shard::new(index, count)
                    .map_err(|e| format!("--shards {count} with $JOB_COMPLETION_INDEX={index}: {e}"))
            }
            (None, None) => Ok(Shard::default()),
        }
    }

    /// The plan of this run: its shard, its plan file, its progress log lines, where it pushes
    /// metrics.
    fn plan(&self, runtime: &Runtime) -> anyhow::Result<Plan> {
        let shard = self.shard().map_err(Invalid)?;
        let spec = Spec::load(&self.common.spec)?;
        let mut options = self.common.options(shard);
        options.progress_every = (self.progress_seconds > 0).then(|| Duration::from_secs(self.progress_seconds));
        if let Some(url) = &self.metrics {
            let pusher = Pusher::new(url, &spec.name(), shard).map_err(Invalid)?;
            let every = Duration::from_secs(self.metrics_seconds.max(1));
            options.metrics = Some(Metrics { pusher: Arc::new(pusher), every });
        }
        let plan = Plan::new(spec, &options)?;
        let Some(url) = &self.plan else { return Ok(plan) };
        let file = load_plan_file(runtime, &plan, url)?;
        let store = self.checkpoint.clone().unwrap_or_else(|| Checkpoints::beside(url));
        let checkpoints = Checkpoints::new(&store, &file, plan.shard, &plan.s3)
            .map_err(|e| Invalid(format!("--checkpoint {}: {e:#}", redact_url(&store))))?;
        Ok(plan.with_input(file.source).with_checkpoints(checkpoints, self.restart))
    }
}

/// `plan`, run from the plan file at `url` if one is given.
fn from_plan_file(runtime: &Runtime, plan: Plan, url: Option<&str>) -> anyhow::Result<Plan> {
    let Some(url) = url else { return Ok(plan) };
    let file = load_plan_file(runtime, &plan, url)?;
    Ok(plan.with_input(file.source))
}

/// The plan file at `url`, checked to be of `plan`'s spec and number of shards (exit status 2
/// otherwise).
fn load_plan_file(runtime: &Runtime, plan: &Plan, url: &str) -> anyhow::Result<PlanFile> {
    let file = runtime.block_on(PlanFile::load(url, &plan.s3)).map_err(|e| match e.downcast::<PlanMismatch>() {
        Ok(mismatch) => anyhow::Error::from(mismatch),
        // A plan that cannot be read is a command line that cannot be run.
        Err(e) => Invalid(format!("--plan: {e:#}")).into(),
    })?;
    file.check(plan.spec.text(), plan.shard.count)
        .map_err(|PlanMismatch(e)| PlanMismatch(format!("--plan {}: {e}", redact_url(url))))?;
    Ok(file)
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    common: CommonArgs,

    /// The number of shards to plan for.
    #[arg(long, default_value_t = 1)]
    shards: u32,

    /// Write the plan to this file (a path or s3://), for `runner run --plan`: the input listed
    /// once (every object's size and ETag), its columns typed once (a CSV input is read
    /// whole for it), and each shard's splits.
    #[arg(long, value_name = "PLAN")]
    out: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

impl CommonArgs {
    fn options(&self, shard: Shard) -> Options {
        let cache = if self.no_cache { None } else { self.cache_dir.clone().or_else(ComponentCache::default_dir) };
        let plugin_dirs = self.plugin_dirs.clone();
        let progress = !self.no_progress;
        let registry = Registry::builtin();
        Options { plugin_dirs, cache, progress, progress_every: None, metrics: None, shard, registry, input: None }
    }

    fn plan(&self) -> anyhow::Result<Plan> {
        Ok(Plan::new(Spec::load(&self.spec)?, &self.options(Shard::default()))?)
    }
}

/// The command line, or a plugin it names, is invalid (exit status 2, as for a spec error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Invalid(String);

/// A failure the command has printed already: a run prints its error with its summary, in the
/// order its report format asks for.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct Reported(anyhow::Error);

/// The exit status of a failed command, decided here and nowhere else: 2 for a spec or a
/// command line that is invalid (a plugin that refuses its config, a plan file made for another
/// spec or number of shards included), 130 or 143 for a
/// run a signal stopped, 1 for any other failure.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    let e = e.downcast_ref::<Reported>().map_or(e, |Reported(inner)| inner);
    match e.downcast_ref::<Interrupted>() {
        // 128 + the signal number, as shells report a process a signal stopped.
        Some(Interrupted("SIGINT")) => ExitCode::from(130),
        Some(_) => ExitCode::from(143),
        None if e.downcast_ref::<SpecError>().is_some()
            || e.downcast_ref::<Invalid>().is_some()
            || e.downcast_ref::<PlanMismatch>().is_some() =>
        {
            ExitCode::from(EXIT_INVALID)
        }
        None => ExitCode::from(EXIT_RUN_FAILED),
    }
}

/// `print!` for what a command prints: a reader that closed the pipe (`runner plan | head -1`)
/// ends the process quietly, with status 0, as Unix tools do; any other failure to write is an
/// error (status 1). Never a panic.
macro_rules! out {
    ($($arg:tt)*) => { write_out(format_args!($($arg)*)) };
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => { write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing standard output: {e}");
        std::process::exit(i32::from(EXIT_RUN_FAILED));
    }
}

/// One dispatch, on one runtime; every failure is printed (once) and mapped to its exit status
/// by [`exit_code`].
fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,runner=info,plugin=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUN_FAILED);
        }
    };
    let done = match cli.command {
        Command::Run(args) => run(&runtime, args),
        Command::Validate(args) => validate(&runtime, args),
        Command::Plan(args) => plan(&runtime, args),
        Command::Lookup(args) => lookup(&runtime, args),
        Command::Plugin(PluginCommand::New { name, kind, dir }) => new_plugin(&dir, &name, kind),
        Command::Plugin(PluginCommand::Inspect { wasm, cache_dir }) => inspect(&wasm, cache_dir),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<Reported>().is_none() {
                eprintln!("error: {e:#}");
            }
            exit_code(&e)
        }
    }
}

fn run(runtime: &Runtime, mut args: RunArgs) -> anyhow::Result<()> {
    args.common.no_progress |= args.quiet;
    let plan = args.plan(runtime)?;
    // Signals are watched from before the steps open, on a thread of their own: a second
    // Ctrl-C works even while plugin calls hold every worker of the run's runtime.
    let stop = Arc::new(Stop::default());
    let signals = SignalWatch::start(stop.clone()).context("cannot watch for signals")?;
    let report = runtime.block_on(plan.run(stop));
    drop(signals);
    let error = report.error.as_ref().map(|e| format!("error: {e:#}"));
    match args.report {
        // The JSON line comes last, so a script can read the final line.
        ReportFormat::Json => {
            error.iter().for_each(|e| eprintln!("{e}"));
            eprintln!("{}", report.to_json());
        }
        // The error comes last, where a person looks first.
        ReportFormat::Text => {
            if !args.quiet || error.is_some() {
                eprint!("{report}");
            }
            error.iter().for_each(|e| eprintln!("{e}"));
        }
    }
    match report.error {
        None => Ok(()),
        Some(e) => Err(Reported(e).into()),
    }
}

fn validate(runtime: &Runtime, args: CommonArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    // Each plugin is opened once with its config and assets: a config it refuses is invalid.
    runtime.block_on(plan.check_plugins())?;
    // The columns each built-in step reads, against the source's header (one line read).
    let notes = runtime.block_on(plan.check_columns())?;
    outln!("{}: ok", args.spec.display());
    for step in &plan.steps {
        outln!("  {:<10} {:<16} {}", step.spec.role.to_string(), step.spec.name, step.label());
        if let PlannedImplementation::Plugin { plugin, sandbox, .. } = &step.implementation {
            outln!(
                "  {:<10} {:<16} {}, {} KiB; {}",
                "",
                "",
                plugin.contract.export_name(),
                plugin.size / 1024,
                sandbox.describe()
            );
        }
    }
    if let Some(checks) = plan.plugin_checks() {
        outln!("  plugins compiled with {}", checks.describe());
    }
    notes.iter().for_each(|note| outln!("  note: {note}"));
    Ok(())
}

fn plan(runtime: &Runtime, args: PlanArgs) -> anyhow::Result<()> {
    if args.shards == 0 {
        return Err(Invalid("--shards must be at least 1".into()).into());
    }
    let plan = args.common.plan()?;
    let Some(out) = &args.out else {
        let shards = runtime.block_on(plan.shard_plan(args.shards))?;
        out!("{shards}");
        return Ok(());
    };
    let source = runtime.block_on(plan.plan_input(args.shards))?;
    let digest = spec_digest(plan.spec.text());
    let file = PlanFile {
        version: PLAN_VERSION,
        id: PlanFile::fresh_id(&digest),
        made_by: format!("runner {}", env!("CARGO_PKG_VERSION")),
        spec: args.common.spec.display().to_string(),
        spec_digest: digest,
        shards: args.shards,
        source,
    };
    let written = runtime.block_on(file.save(out, &plan.s3))?;
    out!("{}", ShardPlan { shards: file.source.shards(args.shards), note: None });
    outln!("plan written to {written}: {file}");
    Ok(())
}

fn lookup(runtime: &Runtime, args: LookupArgs) -> anyhow::Result<()> {
    let plan = from_plan_file(runtime, args.common.plan()?, args.plan.as_deref())?;
    let found = runtime.block_on(runner::lookup::lookup(plan, &args.values))?;
    if args.show_key {
        outln!("key: {}", found.key);
    }
    match found.stored {
        Some(Stored::Value(value)) => outln!("{value}"),
        Some(Stored::Hash(fields)) => fields.iter().for_each(|(field, value)| outln!("{field}: {value}")),
        None => anyhow::bail!(
            "nothing is stored under key {} (the row {} was not written by this pipeline)",
            found.key,
            args.values.join(" ")
        ),
    }
    Ok(())
}

fn new_plugin(dir: &std::path::Path, name: &str, kind: Kind) -> anyhow::Result<()> {
    let role = match kind {
        Kind::Source => Role::Source,
        Kind::Transform => Role::Transform,
        Kind::Sink => Role::Sink,
    };
    let created = runner::scaffold::new_plugin(dir, name, role).map_err(|e| Invalid(format!("{e:#}")))?;
    outln!("created {} ({} plugin, world `{}`)", created.display(), role, role.world());
    outln!("  cd {} && cargo build --release --target wasm32-wasip2 && runner run pipeline.toml", created.display());
    Ok(())
}

fn inspect(wasm: &std::path::Path, cache_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let cache = ComponentCache::new(cache_dir.or_else(ComponentCache::default_dir));
    let inspection = PluginRuntime::new(cache, EngineChecks::default())
        .and_then(|runtime| runtime.inspect(wasm))
        .map_err(|e| Invalid(format!("{e:#}")))?;
    outln!("{}: {} KiB", wasm.display(), inspection.size / 1024);
    let usable = match &inspection.contract {
        Ok(contract) => {
            outln!("  world:    {} (exports {})", contract.role.world(), contract.export_name());
            outln!("  contract: {PACKAGE}@{}; this runner speaks {}: compatible", contract.version, spoken_versions());
            true
        }
        Err(reason) => {
            outln!("  contract: not usable: {reason}");
            false
        }
    };
    if let Err(reason) = &inspection.links {
        outln!("  imports:  not all provided: {reason}");
    }
    outln!("  imports:  {}", inspection.imports.join(", "));
    outln!("  exports:  {}", inspection.exports.join(", "));
    if usable && inspection.links.is_ok() {
        Ok(())
    } else {
        // What is wrong is printed above.
        Err(Reported(Invalid(format!("{} cannot run in this runner", wasm.display())).into()).into())
    }
}

/// Watches for SIGINT and SIGTERM on a thread of its own until dropped: the first asks the run
/// to stop ([`Stop::request`]), the second ends the process at once (130 or 143).
struct SignalWatch {
    done: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalWatch {
    fn start(stop: Arc<Stop>) -> std::io::Result<SignalWatch> {
        use tokio::signal::unix::{SignalKind, signal};
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        // The handlers are installed here, before the run starts: a signal that arrives while
        // the watch thread is still starting must not meet the default action and kill the
        // process with nothing committed nor reported.
        let signals = {
            let _entered = runtime.enter();
            Signals { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? }
        };
        let thread = std::thread::Builder::new().name("signals".into()).spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = watch(stop, signals) => {}
                    _ = finished => {}
                }
            })
        })?;
        Ok(SignalWatch { done: Some(done), thread: Some(thread) })
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// The next SIGINT or SIGTERM, by name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// The first signal stops the run; the second ends the process.
async fn watch(stop: Arc<Stop>, mut signals: Signals) {
    let first = signals.next().await;
    if stop.request(first) {
        eprintln!("{first}: stopping after the batches in flight, committing nothing (send it again to abandon them)");
    } else {
        eprintln!("{first}: the run is committing its output and finishes first (send it again to abandon it)");
    }
    let code = if signals.next().await == "SIGINT" { 130 } else { 143 };
    eprintln!("abandoning the run");
    std::process::exit(code);
}
