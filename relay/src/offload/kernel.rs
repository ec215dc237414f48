//! The eBPF fast path loaded and attached with aya: the object `build.rs` compiled from
//! `relay/bpf/channel_relay.bpf.c`, one TC ingress attachment per interface that carries a
//! listening or relayed address, and the maps the shards install channels into.

use std::collections::HashMap as StdHashMap;
use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::{HashMap, MapData, PerCpuHashMap};
use aya::programs::tc::{NlOptions, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::util::KernelVersion;
use geoturn_relay_proto::server::OffloadedChannel;

use super::OffloadError;
use super::entry::{
    self, AllocKey, ChannelCounters, ChannelKey, ChannelVal, CountersVal, LimitsVal, PeerKey,
    PeerVal,
};

/// The object compiled at build time, 8-byte aligned as the ELF parser needs (plain
/// `include_bytes!` gives no alignment, and the parse fails at random).
static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/channel_relay.bpf.o"));

/// Keep in step with MAX_CHANNELS / MAX_ALLOCATIONS in the C file: inserts past these fail
/// and the channel simply stays in userspace.
const PROGRAM: &str = "channel_relay";

struct Maps {
    channels: HashMap<MapData, ChannelKey, ChannelVal>,
    peers: HashMap<MapData, PeerKey, PeerVal>,
    counters: PerCpuHashMap<MapData, ChannelKey, CountersVal>,
    limits: HashMap<MapData, AllocKey, LimitsVal>,
    /// What this process installed: channel key → its encoding (to update and remove).
    installed: StdHashMap<ChannelKey, entry::Entry>,
    /// Channels installed per allocation: its limits entry goes with the last one.
    per_allocation: StdHashMap<AllocKey, usize>,
    /// Counters of channels already removed.
    retired: ChannelCounters,
    /// Inserts the kernel refused (a full map): those channels stayed in userspace.
    refused: u64,
}

/// The loaded, attached fast path. Dropping it detaches the program (TCX links close with
/// their file descriptors, so an exit of any kind detaches too).
pub struct Offload {
    maps: Mutex<Maps>,
    /// Holds the program and its links.
    _ebpf: Ebpf,
    interfaces: Vec<String>,
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, OffloadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| OffloadError::Load(format!("the object has no map {name}")))?;
    T::try_from(map).map_err(|e| OffloadError::Load(format!("map {name}: {e}")))
}

impl Offload {
    /// Loads the program and attaches it to TC ingress of each of `interfaces`.
    pub fn load(interfaces: &[String]) -> Result<Self, OffloadError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| OffloadError::Load(e.to_string()))?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| OffloadError::Load(format!("the object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| OffloadError::Load(e.to_string()))?;
        program
            .load()
            .map_err(|e| OffloadError::Load(format!("{e:?}")))?;
        // TCX (Linux 6.6+) links detach when the process exits, however it exits; older
        // kernels get a netlink filter on a clsact qdisc, which Drop removes.
        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        for iface in interfaces {
            let options = if tcx {
                TcAttachOptions::TcxOrder(LinkOrder::default())
            } else {
                // Already there is fine (another program, an earlier run).
                let _ = aya::programs::tc::qdisc_add_clsact(iface);
                TcAttachOptions::Netlink(NlOptions::default())
            };
            program
                .attach_with_options(iface, TcAttachType::Ingress, options)
                .map_err(|e| OffloadError::Attach(iface.clone(), e.to_string()))?;
        }
        let maps = Maps {
            channels: take(&mut ebpf, "channels")?,
            peers: take(&mut ebpf, "peers")?,
            counters: take(&mut ebpf, "channel_counters")?,
            limits: take(&mut ebpf, "allocation_limits")?,
            installed: StdHashMap::new(),
            per_allocation: StdHashMap::new(),
            retired: ChannelCounters::default(),
            refused: 0,
        };
        Ok(Self {
            maps: Mutex::new(maps),
            _ebpf: ebpf,
            interfaces: interfaces.to_vec(),
        })
    }

    /// The interfaces the program is attached to.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic while holding the lock leaves maps that are still consistent enough to
        // remove from: keep going.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs `c`, or updates its deadline. A refusal (a full map) leaves the channel to
    /// userspace.
    pub fn install(&self, c: &OffloadedChannel) {
        let Some(e) = entry::encode(c, super::clock::kernel_ns(c.expires)) else {
            return;
        };
        let mut m = self.maps();
        let new = !m.installed.contains_key(&e.channel);
        if new && !m.per_allocation.contains_key(&e.alloc) {
            let limits = entry::encode_limits(&c.limits, super::clock::now_ns());
            let needed = c.limits.bytes_per_sec > 0 || c.limits.packets_per_sec > 0;
            if needed && m.limits.insert(e.alloc, limits, 0).is_err() {
                // Without its limits the channel must not be relayed in the kernel.
                m.refused += 1;
                return;
            }
        }
        // The peer's entry first: a client's packet relayed before its peer entry exists
        // would have its answer go up, which is harmless, while the other order is too.
        let peer_ok = m.peers.insert(e.peer, e.peer_val, 0).is_ok();
        let channel_ok = peer_ok && m.channels.insert(e.channel, e.channel_val, 0).is_ok();
        if !channel_ok {
            let _ = m.peers.remove(&e.peer);
            m.refused += 1;
            if new && !m.per_allocation.contains_key(&e.alloc) {
                let _ = m.limits.remove(&e.alloc);
            }
            return;
        }
        if new {
            *m.per_allocation.entry(e.alloc).or_insert(0) += 1;
        }
        m.installed.insert(e.channel, e);
    }

    /// Stops relaying `c` in the kernel and keeps its counters.
    pub fn remove(&self, c: &OffloadedChannel) {
        let Some(e) = entry::encode(c, 0) else { return };
        let mut m = self.maps();
        let Some(installed) = m.installed.remove(&e.channel) else {
            return;
        };
        let _ = m.channels.remove(&installed.channel);
        let _ = m.peers.remove(&installed.peer);
        // Read after the entries are gone, so nothing more is counted under this key.
        if let Ok(per_cpu) = m.counters.get(&installed.channel, 0) {
            let mut sum = ChannelCounters::default();
            for raw in per_cpu.iter() {
                sum.add_raw(raw);
            }
            m.retired.add(&sum);
        }
        let _ = m.counters.remove(&installed.channel);
        let last = match m.per_allocation.get_mut(&installed.alloc) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => true,
        };
        if last {
            m.per_allocation.remove(&installed.alloc);
            let _ = m.limits.remove(&installed.alloc);
        }
    }

    /// Everything relayed in the kernel so far (live channels and removed ones), the number
    /// of channels installed now and the inserts refused.
    pub fn counters(&self) -> (ChannelCounters, usize, u64) {
        let m = self.maps();
        let mut total = m.retired;
        for item in m.counters.iter() {
            let Ok((_, per_cpu)) = item else { continue };
            for raw in per_cpu.iter() {
                total.add_raw(raw);
            }
        }
        (total, m.installed.len(), m.refused)
    }
}
