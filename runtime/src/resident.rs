//! Memory a [`crate::exec::Model`] keeps on a device between runs, and the graph recorded
//! for it.
//!
//! On devices with their own memory (GPUs) a run would otherwise allocate its scratch arena,
//! inputs and outputs, and free them after (each free waits for the device). [`Resident`]
//! keeps them while the symbol values (hence every size) stay the same, and replaces them
//! when they change. With stable buffers the plan's launches are the same every run, so the
//! second run with them records the launches into a graph ([`Device::begin_capture`]) and
//! every later run replays it: one submission instead of one per kernel.

use std::sync::Arc;

use crate::device::{Device, DeviceAllocation, DeviceError, GraphHandle};
use crate::exec::RuntimeError;

/// A run's buffers on the device, for one set of symbol values.
pub(crate) struct Resident {
    // Dropped first: the graph launches kernels on the buffers below.
    graph: Option<Recorded>,
    graph_note: Option<String>,
    runs: u64,
    symbols: Vec<i64>,
    pub buffers: RunBuffers,
}

/// The memory one run uses besides the weights.
pub(crate) struct RunBuffers {
    pub arena: DeviceAllocation,
    pub inputs: Vec<DeviceAllocation>,
    pub outputs: Vec<DeviceAllocation>,
}

/// A recorded graph, freed (after the device is idle) on drop.
struct Recorded {
    device: Arc<dyn Device>,
    handle: GraphHandle,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let _ = self.device.synchronize();
        // SAFETY: recorded by this device, freed once, nothing pending after the wait.
        unsafe { self.device.drop_graph(self.handle) };
    }
}

/// The resident buffers for these symbol values and sizes: those in `slot` when they match,
/// else new ones (the old ones, and their graph, are freed first).
pub(crate) fn buffers_for<'a>(
    slot: &'a mut Option<Resident>,
    device: &Arc<dyn Device>,
    symbols: &[i64],
    arena_bytes: usize,
    input_bytes: &[usize],
    output_bytes: &[usize],
) -> Result<&'a mut Resident, DeviceError> {
    let sizes = |list: &[DeviceAllocation]| list.iter().map(DeviceAllocation::bytes).collect::<Vec<_>>();
    let fits = slot.as_ref().is_some_and(|r| {
        r.symbols == symbols
            && r.buffers.arena.bytes() == arena_bytes
            && sizes(&r.buffers.inputs) == input_bytes
            && sizes(&r.buffers.outputs) == output_bytes
    });
    if !fits {
        *slot = None;
        let alloc = |bytes: &[usize]| -> Result<Vec<DeviceAllocation>, DeviceError> {
            bytes.iter().map(|&n| DeviceAllocation::new(device, n)).collect()
        };
        *slot = Some(Resident {
            graph: None,
            graph_note: None,
            runs: 0,
            symbols: symbols.to_vec(),
            buffers: RunBuffers {
                arena: DeviceAllocation::new(device, arena_bytes)?,
                inputs: alloc(input_bytes)?,
                outputs: alloc(output_bytes)?,
            },
        });
    }
    Ok(slot.as_mut().expect("just filled"))
}

impl Resident {
    /// Runs the plan on these buffers, `issue` issuing its steps: the first run issues them;
    /// the second records them into a graph, when the device has graphs, and replays it; later
    /// runs replay the graph. A recording that fails is reported by
    /// [`Resident::graph_note`] and the plan is issued as usual from then on.
    pub fn run_recorded(
        &mut self,
        device: &Arc<dyn Device>,
        symbols: &[i64],
        mut issue: impl FnMut(&RunBuffers) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        self.runs += 1;
        if let Some(g) = &self.graph {
            // SAFETY: recorded on this device with these buffers, which are still allocated.
            return unsafe { device.replay(g.handle, symbols) }.map_err(RuntimeError::Device);
        }
        if self.runs < 2 || self.graph_note.is_some() {
            return issue(&self.buffers);
        }
        match device.begin_capture(symbols) {
            Ok(true) => {}
            Ok(false) => {
                self.graph_note = Some(format!("not used: {} has no graphs", device.name()));
                return issue(&self.buffers);
            }
            Err(e) => {
                self.graph_note = Some(format!("not recorded: {e}"));
                return issue(&self.buffers);
            }
        }
        // While recording, nothing runs: a failed recording issues the plan again.
        let issued = issue(&self.buffers);
        let recorded = device.end_capture();
        issued?;
        match recorded {
            Ok(handle) => {
                let runs = Recorded { device: device.clone(), handle };
                let handle = runs.handle;
                self.graph = Some(runs);
                self.graph_note = Some("recorded on the second run with these sizes, replayed since".into());
                // SAFETY: just recorded on this device with these buffers.
                unsafe { device.replay(handle, symbols) }.map_err(RuntimeError::Device)
            }
            Err(e) => {
                self.graph_note = Some(format!("not recorded: {e}"));
                issue(&self.buffers)
            }
        }
    }

    /// Whether the runs replay a graph, or why not (`None` before the second run).
    pub fn graph_note(&self) -> Option<&str> {
        self.graph_note.as_deref()
    }
}
