//! Publishing new parameters into a target's data page: the seqlock writer.

use crate::error::Result;
use crate::fake_clock::data_page::{OFF_GENERATION, OFF_TIME_WORD, Params, slot_offset, time_word};
use crate::target::mem::RemoteMemory;

/// Writes `params` into the inactive slot, then bumps the generation: readers see either the
/// old or the new parameters, never a mix, and a writer dying half-way changes nothing. Then
/// `time()`'s summary, tagged with the new generation (until it lands, `time()` reads the slot).
pub(crate) fn write_slot(
    mem: &RemoteMemory,
    data_addr: u64,
    generation: u64,
    params: &Params,
) -> Result<()> {
    for (addr, bytes, what) in publication(data_addr, generation, params) {
        mem.write_data(addr, &bytes, what)?;
    }
    Ok(())
}

/// The seqlock writer's three writes, in order: (address, bytes, what it is). One home for the
/// order; `patch/live.rs` writes them through its own bound memory.
pub(crate) fn publication(
    data_addr: u64,
    generation: u64,
    params: &Params,
) -> [(u64, Vec<u8>, &'static str); 3] {
    let next = generation.wrapping_add(1);
    let slot = params.encode_slot();
    let word = time_word(&slot, next);
    [
        (
            data_addr + slot_offset(next) as u64,
            slot.to_vec(),
            "write the new offsets",
        ),
        (
            data_addr + OFF_GENERATION as u64,
            next.to_le_bytes().to_vec(),
            "publish the new offsets",
        ),
        (
            data_addr + OFF_TIME_WORD as u64,
            word.to_le_bytes().to_vec(),
            "publish time()'s summary",
        ),
    ]
}
