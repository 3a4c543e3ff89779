//! CPU time of other processes (the server, Redis) over a benchmark's measured window,
//! read from `/proc/<pid>/stat`: what a request costs, apart from the load generator on
//! the same cores.

use std::collections::BTreeMap;

use serde::Serialize;

/// `/proc` counts CPU time in USER_HZ ticks, 100 per second on Linux whatever the kernel.
const TICKS_PER_SECOND: f64 = 100.0;

/// A process to watch, as `--cpu-of name=pid`.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for Watched {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pid) = s.split_once('=').ok_or("expected name=pid")?;
        let pid = pid
            .parse()
            .map_err(|_| format!("{pid} is not a process id"))?;
        Ok(Self {
            name: name.to_owned(),
            pid,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    pub seconds: f64,
    /// Per successful unit of the scenario (a flow, an onboarding, a certificate).
    pub us_per_request: f64,
}

/// User plus system ticks of every thread of `pid` so far.
fn ticks(pid: u32) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Ok(field(11) + field(12))
}

/// CPU ticks of the watched processes at the start of a window.
pub struct Window(Vec<(Watched, u64)>);

impl Window {
    pub fn start(watched: &[Watched]) -> std::io::Result<Self> {
        watched
            .iter()
            .map(|w| Ok((w.clone(), ticks(w.pid)?)))
            .collect::<std::io::Result<_>>()
            .map(Self)
    }

    /// What each process used since the start, per one of `done` units.
    pub fn end(&self, done: u64) -> std::io::Result<BTreeMap<String, CpuUse>> {
        self.0
            .iter()
            .map(|(w, start)| {
                let seconds = ticks(w.pid)?.saturating_sub(*start) as f64 / TICKS_PER_SECOND;
                let us_per_request = seconds * 1e6 / done.max(1) as f64;
                Ok((
                    w.name.clone(),
                    CpuUse {
                        seconds,
                        us_per_request,
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_own_cpu_time_grows_with_work() {
        let me = Watched {
            pid: std::process::id(),
            name: "me".into(),
        };
        let window = Window::start(std::slice::from_ref(&me)).unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = &window.end(1000).unwrap()["me"];
        assert!(used.seconds >= 0.1, "{used:?}");
        assert!((used.us_per_request - used.seconds * 1000.0).abs() < 1e-6);
    }

    #[test]
    fn a_watched_process_is_name_equals_pid() {
        let w: Watched = "server=42".parse().unwrap();
        assert_eq!((w.name.as_str(), w.pid), ("server", 42));
        assert!("server".parse::<Watched>().is_err());
        assert!("server=x".parse::<Watched>().is_err());
    }
}
