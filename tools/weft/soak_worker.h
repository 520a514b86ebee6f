// A `weft soak` worker thread: random copies, batches and async copies between this process's
// buffers and its own region in random live peers' slices, every byte checked, counted on the
// board (soak_board.h). Each worker owns one region in every slice (RegionOffset), so no two
// workers ever write the same bytes and every difference found is a fault of the fabric, not of
// the soak.
#pragma once

#include <cstdint>

#include <weft/pool.h>

#include "tools/weft/soak_board.h"

namespace weft::tools::soak {

// Runs until the board's phase leaves 0 (the driver stops the work), then returns with the
// record idle.
void RunWorker(bm::Pool& pool, Board& board, uint32_t slot, uint32_t thread, uint64_t seed);

}  // namespace weft::tools::soak
