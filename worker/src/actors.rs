//! Task subtasks as actix actors. Each deployed task subtask becomes a [`TaskActor`] on a
//! `SyncArbiter` thread of its own (tasks block on channels and RocksDB, which must not stall an
//! async arbiter). The actor runs its task in short steps, one `Step` message at a time, sending
//! itself the next one: between steps its mailbox is read, so control messages reach a busy task
//! without shared flags, and the actor system owns every task's life. The worker's `System` runs
//! on its own OS thread beside the tokio runtime that serves gRPC.

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext, System};
use eddy_runtime::exec::{Progress, TaskHost, TaskRun};
use std::sync::Mutex;
use std::thread::JoinHandle;

/// The worker's actor system, hosting the tasks of every attempt deployed here.
#[derive(Debug)]
pub struct TaskActors {
    system: System,
    thread: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
}

impl TaskActors {
    /// Starts the actor system on a thread of its own.
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("task-actors".into())
            .spawn(move || {
                let runner = System::new();
                let _ = tx.send(System::current());
                runner.run()
            })?;
        let system = rx
            .recv()
            .map_err(|_| std::io::Error::other("the actor system did not start"))?;
        Ok(TaskActors {
            system,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the system; tasks still running are dropped, which fails their attempts.
    pub fn stop(&self) {
        self.system.stop();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl TaskHost for TaskActors {
    fn launch(&self, task: TaskRun) -> Result<(), String> {
        let name = task.name().to_string();
        // A sync arbiter makes its actor with a factory it may call again on a restart; the
        // task goes to the first actor only.
        let slot = Mutex::new(Some(task));
        let started = self.system.arbiter().spawn_fn(move || {
            let thread_name = name.clone();
            let address = SyncArbiter::start_with_thread_builder(
                1,
                move || std::thread::Builder::new().name(thread_name.clone()),
                move || TaskActor {
                    run: slot.lock().unwrap_or_else(|e| e.into_inner()).take(),
                    me: None,
                },
            );
            address.do_send(Start(address.clone()));
        });
        if started {
            Ok(())
        } else {
            Err("the worker's actor system has stopped".into())
        }
    }
}

/// One task subtask; it stops (and its thread ends) once the task has ended and nobody holds
/// its address.
struct TaskActor {
    run: Option<TaskRun>,
    /// Its own address while the task runs. A sync arbiter closes the mailbox as soon as no
    /// address is left, even with a message in flight; holding one from the first message on
    /// (see [`Start`]) keeps the `Step` it sends itself deliverable.
    me: Option<Addr<TaskActor>>,
}

impl Actor for TaskActor {
    type Context = SyncContext<Self>;
}

/// The first message: the actor's own address, handed over inside the message so that some
/// address exists at every moment until the task ends.
struct Start(Addr<TaskActor>);

impl Message for Start {
    type Result = ();
}

impl Handler<Start> for TaskActor {
    type Result = ();

    fn handle(&mut self, Start(me): Start, ctx: &mut SyncContext<Self>) {
        self.me = Some(me);
        self.handle(Step, ctx);
    }
}

/// Run the task a little further.
struct Step;

impl Message for Step {
    type Result = ();
}

impl Handler<Step> for TaskActor {
    type Result = ();

    fn handle(&mut self, _: Step, _: &mut SyncContext<Self>) {
        let (Some(run), Some(me)) = (&mut self.run, &self.me) else {
            return;
        };
        match run.step() {
            Progress::More => me.do_send(Step),
            Progress::Done => {
                // Release the task's channels and state at once, and let the thread end.
                self.run = None;
                self.me = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// This crate's directory, read at run time first: a target dir shared between checkouts
    /// may hold a test binary built in another one.
    fn crate_dir() -> std::path::PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
            .into()
    }

    use super::*;
    use eddy_jobs::{compile_file, CompileOptions};
    use eddy_operators::{Factory, RunSettings};
    use eddy_runtime::exec::{execute, CancelHandle, ExecOptions, JobStats};
    use eddy_runtime::graph::{GeneratorSpec, JobGraph};
    use std::path::Path;
    use std::sync::Arc;

    /// Nexmark q5 over `events` generated events, writing to `output`.
    fn q5_graph(events: u64, parallelism: u32, output: &Path) -> JobGraph {
        let options = CompileOptions {
            params: [("output".to_string(), output.display().to_string())]
                .into_iter()
                .collect(),
            parallelism: Some(parallelism),
            generate: Some(GeneratorSpec {
                events: Some(events),
                rate: 1000,
                base_time: eddy_jobs::DEFAULT_NEXMARK_BASE_TIME,
                throttle: false,
            }),
            topic_files: None,
        };
        let job = crate_dir().join("../jobs/nexmark/q5.toml");
        compile_file(&job, &options).unwrap()
    }

    /// Runs q5 over 20k events at parallelism 2; returns its stats and sorted rows.
    fn q5(host: Option<Arc<dyn TaskHost>>) -> (JobStats, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("q5.jsonl");
        let graph = q5_graph(20_000, 2, &output);
        let factory = Factory::new(RunSettings {
            dead_letter_path: dir.path().join("dead-letter.jsonl"),
            ..Default::default()
        });
        let options = ExecOptions {
            host,
            ..ExecOptions::default()
        };
        let stats = execute(&graph, &factory, &options, &CancelHandle::default()).unwrap();
        let mut rows: Vec<String> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        rows.sort();
        (stats, rows)
    }

    #[test]
    fn a_job_on_actors_gives_what_it_gives_on_threads() {
        let actors = Arc::new(TaskActors::start().unwrap());
        let (on_actors, rows_on_actors) = q5(Some(actors.clone() as Arc<dyn TaskHost>));
        let (on_threads, rows_on_threads) = q5(None);
        assert!(!rows_on_threads.is_empty());
        assert_eq!(rows_on_actors, rows_on_threads);
        assert_eq!(on_actors.nodes, on_threads.nodes);
        actors.stop();
    }

    #[test]
    fn a_stopped_actor_system_fails_the_job_instead_of_hanging() {
        let actors = Arc::new(TaskActors::start().unwrap());
        actors.stop();
        let dir = tempfile::tempdir().unwrap();
        let graph = q5_graph(1000, 1, &dir.path().join("out.jsonl"));
        let factory = Factory::new(RunSettings::default());
        let options = ExecOptions {
            host: Some(actors as Arc<dyn TaskHost>),
            ..ExecOptions::default()
        };
        let error = execute(&graph, &factory, &options, &CancelHandle::default()).unwrap_err();
        assert!(
            error.to_string().contains("actor system has stopped"),
            "{error}"
        );
    }
}
