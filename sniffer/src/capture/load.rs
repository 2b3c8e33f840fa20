//! Loading the kernel object: its maps created and its socket filter verified, without reading
//! the kernel's BTF.
//!
//! aya 0.14's `EbpfLoader::new()` parses `/sys/kernel/btf/vmlinux` (5.5 MB here) before it knows
//! whether the object needs it; a socket filter has no CO-RE relocation and needs none of it, but
//! the parse alone took the sidecar's peak memory from 15 to 23 MiB, and left 2 MiB with the
//! allocator afterwards. (aya 0.15 reads it only for objects that need it, but needs a newer
//! rustc than the one this project builds with.) So the sniffer does what that loader does for
//! an object like its own, with aya's parts: `aya_obj` parses and relocates, aya's `MapData`
//! creates the maps, and the two calls aya keeps to itself (the program's load, its
//! information) are made here.

use std::{
    collections::{HashMap, HashSet},
    ffi::{CStr, c_char},
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use aya::maps::{Map, MapData, MapError};
use aya_obj::{
    EbpfSectionKind, Object, ParseError,
    generated::{bpf_attr, bpf_cmd, bpf_map_type, bpf_prog_info, bpf_prog_type},
    relocation::EbpfRelocationError,
};
use thiserror::Error;

/// The verifier's log kept when it refuses the program (its last lines say why).
const VERIFIER_LOG_BYTES: usize = 1 << 20;

/// The object could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The object is not an eBPF ELF file this loader understands.
    #[error("cannot parse the kernel object")]
    Parse(#[from] ParseError),
    /// The object has no program of this name.
    #[error("the kernel object has no program {0:?}; it was built from other sources")]
    NoProgram(String),
    /// A map could not be created.
    #[error("cannot create BPF map {name}")]
    CreateMap {
        /// The map.
        name: String,
        /// What failed.
        #[source]
        source: MapError,
    },
    /// A global data map could not be given its contents.
    #[error("cannot fill BPF map {name} ({call})")]
    FillMap {
        /// The map.
        name: String,
        /// The `bpf()` command that failed.
        call: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Map references or calls in the program could not be resolved.
    #[error("cannot relocate the program")]
    Relocate(#[from] EbpfRelocationError),
    /// The kernel refused the program; `log` is the verifier's account, when it gave one.
    #[error("the kernel refused program {name}{}", verifier_tail(.log))]
    Program {
        /// The program.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
        /// The verifier's log.
        log: String,
    },
}

/// The last lines of a verifier log, which name the instruction it refused and why.
fn verifier_tail(log: &str) -> String {
    let lines: Vec<&str> = log.trim_end().lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "; the verifier said:\n{}",
        lines[lines.len().saturating_sub(8)..].join("\n")
    )
}

/// An object to load: its bytes, the globals to set and the maps to size.
///
/// # Examples
///
/// ```no_run
/// use sniffer::capture::load::Loader;
///
/// # fn object() -> &'static [u8] { &[] }
/// let link: u8 = 1;
/// let mut loaded = Loader::new(object())
///     .global("LINK_LAYER", &[link])
///     .max_entries("EVENTS", 1 << 22)
///     .load("tcp_sniffer")?;
/// let events = loaded.take_map("EVENTS");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct Loader<'a> {
    object: &'a [u8],
    globals: HashMap<&'a str, (&'a [u8], bool)>,
    max_entries: HashMap<&'a str, u32>,
}

/// The object's maps, created, and its program, loaded and ready to attach.
#[derive(Debug)]
pub struct Loaded {
    maps: HashMap<String, Map>,
    program: OwnedFd,
}

impl<'a> Loader<'a> {
    /// The object in `object` (an ELF file as `cargo xtask build-ebpf` writes it).
    pub fn new(object: &'a [u8]) -> Self {
        Self {
            object,
            globals: HashMap::new(),
            max_entries: HashMap::new(),
        }
    }

    /// Sets the read-only global `name` (which must exist, and be `value.len()` bytes long).
    pub fn global(mut self, name: &'a str, value: &'a [u8]) -> Self {
        self.globals.insert(name, (value, true));
        self
    }

    /// Creates map `name` with `entries` entries (bytes, for a ring buffer) instead of the
    /// object's number.
    pub fn max_entries(mut self, name: &'a str, entries: u32) -> Self {
        self.max_entries.insert(name, entries);
        self
    }

    /// Creates every map of the object, sets the globals, resolves the program's references to
    /// the maps and loads `program` (a socket filter) into the kernel.
    pub fn load(self, program: &str) -> Result<Loaded, LoadError> {
        let Self {
            object,
            globals,
            max_entries,
        } = self;
        let mut obj = Object::parse(object)?;
        obj.patch_map_data(globals)?;

        let mut maps = Vec::new();
        for (name, mut def) in obj.maps.drain() {
            if let Some(&entries) = max_entries.get(name.as_str()) {
                def.set_max_entries(entries);
            }
            if def.map_type() == bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32 {
                // The kernel wants no value size for a ring buffer.
                def.set_value_size(0);
            }
            // The maps are not described to the kernel in BTF (`aya-ebpf` maps have none).
            let data = MapData::create(def.clone(), &name, None).map_err(|source| {
                LoadError::CreateMap {
                    name: name.clone(),
                    source,
                }
            })?;
            fill(&name, &def, data.fd().as_fd())?;
            maps.push((name, def, data));
        }

        let text_sections: HashSet<usize> = obj.functions.keys().map(|&(index, _)| index).collect();
        obj.relocate_maps(
            maps.iter()
                .map(|(name, def, data)| (name.as_str(), data.fd().as_fd().as_raw_fd(), def)),
            &text_sections,
        )?;
        obj.relocate_calls(&text_sections)?;

        let key = obj
            .programs
            .get(program)
            .ok_or_else(|| LoadError::NoProgram(program.to_owned()))?
            .function_key();
        let function = &obj.functions[&key];
        let fd = load_socket_filter(program, &function.instructions, &obj.license).map_err(
            |(source, log)| LoadError::Program {
                name: program.to_owned(),
                source,
                log,
            },
        )?;

        let mut by_name = HashMap::new();
        for (name, _, data) in maps {
            let map = Map::from_map_data(data).map_err(|source| LoadError::CreateMap {
                name: name.clone(),
                source,
            })?;
            by_name.insert(name, map);
        }
        Ok(Loaded {
            maps: by_name,
            program: fd,
        })
    }
}

impl Loaded {
    /// Takes map `name` out (once).
    pub fn take_map(&mut self, name: &str) -> Option<Map> {
        self.maps.remove(name)
    }

    /// The loaded program, to attach with `SO_ATTACH_BPF`.
    #[must_use]
    pub fn program(&self) -> BorrowedFd<'_> {
        self.program.as_fd()
    }
}

/// Gives a global data map the contents the object has for it, and freezes a read-only one (the
/// verifier then takes its values as constants), as aya's loader does.
fn fill(name: &str, def: &aya_obj::Map, fd: BorrowedFd<'_>) -> Result<(), LoadError> {
    let failed = |call| {
        move |source| LoadError::FillMap {
            name: name.to_owned(),
            call,
            source,
        }
    };
    if !def.data().is_empty() {
        let key = 0u32;
        let mut attr = zeroed_attr();
        // SAFETY: writing the fields of the union variant BPF_MAP_UPDATE_ELEM reads.
        unsafe {
            let u = &mut attr.__bindgen_anon_2;
            u.map_fd = fd.as_raw_fd() as u32;
            u.key = (&raw const key) as u64;
            u.__bindgen_anon_1.value = def.data().as_ptr() as u64;
        }
        bpf(bpf_cmd::BPF_MAP_UPDATE_ELEM, &mut attr).map_err(failed("BPF_MAP_UPDATE_ELEM"))?;
    }
    if def.section_kind() == EbpfSectionKind::Rodata {
        let mut attr = zeroed_attr();
        attr.__bindgen_anon_2.map_fd = fd.as_raw_fd() as u32;
        bpf(bpf_cmd::BPF_MAP_FREEZE, &mut attr).map_err(failed("BPF_MAP_FREEZE"))?;
    }
    Ok(())
}

/// `BPF_PROG_LOAD` of a socket filter. When the kernel refuses it, it is loaded once more with
/// the verifier's log on, and the log is returned with the error.
fn load_socket_filter(
    name: &str,
    instructions: &[aya_obj::generated::bpf_insn],
    license: &CStr,
) -> Result<OwnedFd, (io::Error, String)> {
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = zeroed_attr();
        // SAFETY: writing the fields of the union variant BPF_PROG_LOAD reads; the pointers
        // stay valid for the call.
        unsafe {
            let u = &mut attr.__bindgen_anon_3;
            u.prog_type = bpf_prog_type::BPF_PROG_TYPE_SOCKET_FILTER as u32;
            u.insns = instructions.as_ptr() as u64;
            u.insn_cnt = u32::try_from(instructions.len()).unwrap_or(u32::MAX);
            u.license = license.as_ptr() as u64;
            for (to, &from) in u.prog_name.iter_mut().zip(name.as_bytes().iter().take(15)) {
                *to = from as c_char;
            }
            if let Some(log) = log {
                u.log_level = 1;
                u.log_buf = log.as_mut_ptr() as u64;
                u.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
            }
        }
        bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    match attempt(None) {
        // SAFETY: BPF_PROG_LOAD returns a new descriptor this process owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(err) => {
            let mut log = vec![0u8; VERIFIER_LOG_BYTES];
            let again = attempt(Some(&mut log));
            if let Ok(fd) = again {
                // Loaded the second time (a transient failure): keep it.
                // SAFETY: as above.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err((err, String::from_utf8_lossy(&log[..end]).into_owned()))
        }
    }
}

/// The kernel's counters of a loaded program: (nanoseconds run, runs), counted while
/// `kernel.bpf_stats_enabled` is 1.
pub fn run_stats(program: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // SAFETY: `bpf_prog_info` is plain data, valid all zero.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    // SAFETY: writing the fields of the union variant BPF_OBJ_GET_INFO_BY_FD reads; `info`
    // outlives the call, which writes at most `info_len` bytes.
    unsafe {
        let u = &mut attr.info;
        u.bpf_fd = program.as_raw_fd() as u32;
        u.info_len = size_of::<bpf_prog_info>() as u32;
        u.info = (&raw mut info) as u64;
    }
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok((info.run_time_ns, info.run_cnt))
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: `bpf_attr` is a union of plain data, valid all zero (what the kernel expects of
    // the fields a command does not use).
    unsafe { std::mem::zeroed() }
}

/// The `bpf()` system call; its non-negative result (a descriptor, for commands that make one).
fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i32> {
    // SAFETY: `attr` is a valid `bpf_attr` of the size given.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i32::try_from(ret).unwrap_or(i32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_tail_keeps_the_last_lines() {
        let log: String = (1..=20).map(|n| format!("line {n}\n")).collect();
        let tail = verifier_tail(&log);
        assert!(
            tail.starts_with("; the verifier said:\nline 13\n"),
            "{tail}"
        );
        assert!(tail.ends_with("line 20"), "{tail}");
        assert_eq!(verifier_tail("\n"), "");
    }

    #[test]
    fn a_refused_program_comes_back_with_the_verifier_s_reason() {
        testbed::skip_unless_root!();
        // `exit` with r0 never set.
        let exit = aya_obj::generated::bpf_insn {
            code: 0x95,
            _bitfield_align_1: [],
            _bitfield_1: aya_obj::generated::bpf_insn::new_bitfield_1(0, 0),
            off: 0,
            imm: 0,
        };
        let (err, log) = load_socket_filter("refused", &[exit], c"GPL").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        assert!(log.contains("R0 !read_ok"), "{log}");
    }

    #[test]
    fn an_object_that_is_not_elf_is_a_parse_error() {
        let err = Loader::new(b"not an object")
            .load("tcp_sniffer")
            .unwrap_err();
        assert!(matches!(err, LoadError::Parse(_)), "{err:?}");
    }
}
