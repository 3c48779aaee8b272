//! The open-file limit (`RLIMIT_NOFILE`): every connection is a file descriptor.
//!
//! Many platforms start processes with a soft limit of 1024 and a much higher
//! hard limit; the soft one may be raised to the hard one without privileges.
//! ecos does so at start-up, and sizes its connection cap from the result.

/// The open-file limit after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit in force now (`u64::MAX`: unlimited).
    pub soft: u64,
    /// The hard limit, the most the soft one may be raised to.
    pub hard: u64,
    /// The soft limit the process started with.
    pub was: u64,
}

/// Raises the soft open-file limit to the hard limit; returns the limits in
/// force afterwards, or the error of `getrlimit`.
#[cfg(unix)]
pub fn raise_nofile_limit() -> std::io::Result<NofileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            // macOS refuses an unlimited hard limit here; keep the soft one.
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot raise the open-file limit"
            );
        }
    }
    Ok(NofileLimit {
        soft: as_u64(limit.rlim_cur),
        hard: as_u64(limit.rlim_max),
        was: as_u64(was),
    })
}

/// Without `RLIMIT_NOFILE` there is nothing to raise.
#[cfg(not(unix))]
pub fn raise_nofile_limit() -> std::io::Result<NofileLimit> {
    Err(std::io::Error::other("no RLIMIT_NOFILE on this platform"))
}

/// `rlim_t` as `u64`, with `RLIM_INFINITY` as `u64::MAX`.
#[cfg(unix)]
#[allow(clippy::useless_conversion)] // rlim_t is u64 on Linux, not everywhere.
fn as_u64(value: libc::rlim_t) -> u64 {
    if value == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        u64::try_from(value).unwrap_or(u64::MAX)
    }
}
