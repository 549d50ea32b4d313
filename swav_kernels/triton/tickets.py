"""Split reductions without float atomics: the last program of a group to finish adds the group's
partials, in a fixed order, in the same launch (serial split-K fix-up). An integer ticket decides which
program is last; the sum itself never depends on arrival order, so results are the same bits run to run
and no merge launch is needed."""
import triton
import triton.language as tl


@triton.jit
def last_to_arrive(counter_ptr, arrivals):
    """True in the program that is the last of ``arrivals`` programs to call this on ``counter_ptr`` (an
    int32 that is 0 before the first call; the last program resets it to 0). Everything each program
    stored before its call is visible to the last one (a barrier, then an acquire-release ticket taken
    at GPU scope), which must read it with ``cache_modifier=".cg"`` loads (from L2, not a stale L1)."""
    tl.debug_barrier()
    ticket = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
    last = ticket == arrivals - 1
    if last:
        tl.atomic_xchg(counter_ptr, 0, sem="relaxed", scope="gpu")
    return last
