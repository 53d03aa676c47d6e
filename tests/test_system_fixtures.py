"""Shared fixtures for the system tests: an analytic ResNet-56 split profile.

No tests here. The profile is computed by hand from the bottleneck ResNet-56 of
SPEC §2 (stem conv3x3 16; six groups of 3 bottleneck blocks, planes 16, 16,
32 (stride 2), 32, 64 (stride 2), 64, expansion 4; GAP + Dense head), with
training cost proportional to forward multiply-accumulates per stage.
Stages: [stem, g1, ..., g6, head]; cut m offloads the last m stages.
"""

import numpy as np

from comdml_jax.system.split_profile import SplitProfile

NUM_CLASSES = 10
LAYERS_OFFLOADED = (0, 1, 10, 19, 28, 37, 46, 55)
FULL_STEP_FLOPS = 56.3e9  # ~563 MFLOP per sample x B = 100 (the lead's estimate)


def _stages():
    """Per stage: (forward MACs per sample, params, BN channels, output C, H*W)."""
    out = [(32 * 32 * 3 * 16 * 9, 3 * 16 * 9 + 2 * 16, 16, 16, 32 * 32)]
    cin, hw = 16, 32 * 32
    for planes, stride in ((16, 1), (16, 1), (32, 2), (32, 1), (64, 2), (64, 1)):
        macs = params = bn = 0
        for b in range(3):
            s = stride if b == 0 else 1
            hw_out = hw // (s * s)
            macs += hw * cin * planes + hw_out * planes * planes * 9 + hw_out * planes * 4 * planes
            params += cin * planes + planes * planes * 9 + planes * 4 * planes
            bn += planes + planes + 4 * planes
            if s != 1 or cin != 4 * planes:
                macs += hw_out * cin * 4 * planes
                params += cin * 4 * planes
                bn += 4 * planes
            cin, hw = 4 * planes, hw_out
        out.append((macs, params + 2 * bn, bn, cin, hw))
    out.append((cin * NUM_CLASSES, cin * NUM_CLASSES + NUM_CLASSES, 0, NUM_CLASSES, 1))
    return out


def resnet56_profile(
    batch_size: int = 100, full_step_flops: float = FULL_STEP_FLOPS
) -> SplitProfile:
    """The analytic SplitProfile of the bottleneck ResNet-56 (8 cuts)."""
    st = _stages()
    macs = np.array([s[0] for s in st], np.float64)
    params = np.array([s[1] for s in st], np.int64)
    bn = np.array([s[2] for s in st], np.int64)
    total = macs.sum()
    n = len(st)  # 8 stages
    slow, fast, nbytes, sp, fp = [], [], [], [], []
    for m in range(n):
        keep = n - m  # stages run on the slow side
        if m == 0:
            slow.append(1.0), fast.append(0.0), nbytes.append(0)
            sp.append(int(params.sum() * 4)), fp.append(0)
            continue
        c_cut, hw_cut = st[keep - 1][3], st[keep - 1][4]
        aux_macs = c_cut * NUM_CLASSES
        slow.append(float((macs[:keep].sum() + aux_macs) / total))
        fast.append(float(macs[keep:].sum() / total))
        nbytes.append(batch_size * c_cut * hw_cut * 4 + batch_size * 4)
        sp.append(int((params[:keep].sum() + aux_macs + NUM_CLASSES) * 4))
        fp.append(int(params[keep:].sum() * 4))
    return SplitProfile(
        model="resnet56",
        batch_size=batch_size,
        cuts=np.arange(n),
        layers_offloaded=np.array(LAYERS_OFFLOADED),
        slow_rel_cost=np.array(slow),
        fast_rel_cost=np.array(fast),
        bytes_per_batch=np.array(nbytes, np.int64),
        slow_param_bytes=np.array(sp, np.int64),
        fast_param_bytes=np.array(fp, np.int64),
        full_step_flops=full_step_flops,
        model_bytes=int(4 * (params.sum() + 2 * bn.sum())),
    )
