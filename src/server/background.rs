//! CPU-heavy work off the node loop: encoding a snapshot or a backup, hashing the state for
//! the consistency check. Each job gets a thread of its own at a lower scheduling priority
//! (nice 10), so that on a busy machine the node loop, which sends heartbeats, answers votes
//! and commits, gets the CPU first. On two cores, three nodes encoding a large snapshot at the
//! same index at normal priority delayed heartbeats past the election timeout; a background
//! job that runs a little longer costs nothing but a later snapshot.
//!
//! A thread per job, not tokio's blocking pool: a pool thread lowered once would stay low for
//! whatever it runs next, and raising it back needs privileges. Jobs are rare (a snapshot per
//! a quarter of the state written, a hash per 10,000 entries, a backup when asked).

/// Runs `job` on a new low-priority thread named `raftd-<name>`. If no thread can be made,
/// `job` is dropped: whoever waits on its result sees its channel closed, and treats that as
/// the job failing.
pub fn spawn(name: &str, job: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name(format!("raftd-{name}"))
        .spawn(move || {
            lower_priority();
            job()
        });
    if let Err(e) = spawned {
        ::log::error!("cannot start a thread for {name}: {e}");
    }
}

/// The nice value of background threads (0 is the default, 19 the lowest).
const BACKGROUND_NICE: libc::c_int = 10;

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux the nice value belongs to each thread, and PRIO_PROCESS with `who` 0 names the
    // calling thread: only this one is lowered. Failure (a sandbox refusing it) is harmless.
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {
    // Elsewhere the nice value is per process; the job runs at normal priority.
    let _ = BACKGROUND_NICE;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn a_background_job_runs_lowered_and_the_caller_is_not() {
        let (tx, rx) = std::sync::mpsc::channel();
        super::spawn("test", move || {
            // SAFETY: as above.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let _ = tx.send(nice);
        });
        let nice = rx.recv().expect("the job ran");
        // SAFETY: as above.
        let ours = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert!(
            nice > ours,
            "the job runs at nice {nice}, the caller at {ours}"
        );
    }
}
