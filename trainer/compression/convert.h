// Converting a trained MHA, GQA or MQA model into MLA (docs/design.md, "Converting to MLA"; the math is docs/mla.md,
// "Converting MHA to MLA"), by a joint low-rank factorization of each layer's key and value projections, as MHA2MLA
// and TransMLA do: the shared left factor becomes the latent down-projection kv_down, the right one kv_up.
//
// The MLA model has the source's every size and choice, with attention = mla, no query compression, v_head_dim =
// Dh, qk_rope_head_dim = Dr, qk_nope_head_dim = Dh - Dr, kv_lora_rank = Dc and no latent norm (kv_norm = false:
// a norm of the latent is not linear, and without it a conversion at full rank is exact).
//   - Without RoPE (learned positions) Dr = 0, and the only loss is the rank: at Dc = min(H (Dn + Dv), d) the MLA
//     model computes what the source does (tests/trainer/convert_test.cpp).
//   - With RoPE, each head keeps Dr of its Dh rotated dimensions: the rotary pairs 0, s, 2s, ... (s = Dh / Dr),
//     whose frequencies theta^(-2 i s / Dh) are exactly those of MLA's rope dimensions theta^(-2 i / Dr). MLA has one
//     RoPE key shared by all heads: its projection is the mean over heads of theirs (the least-squares choice). The
//     other Dh - Dr dimensions lose their rotation and join the factorization. Both are approximations, which
//     fine-tuning recovers; the closing loss is what `mlagpt convert` prints.
#pragma once

#include <cstdint>
#include <vector>

#include "model/gpt.h"

namespace mlagpt::trainer {

// The MLA config `source` converts into. rope_dim < 0: Dh / 4 with RoPE (rounded down to a divisor of Dh that is
// even), 0 without. ConfigError naming the value for an MLA source, a rope_dim that is odd, does not divide Dh, is
// not below Dh, or is not 0 without RoPE, and a kv_lora_rank outside [1, min(H (Dn + Dv), d)].
model::ModelConfig mla_config_for(const model::ModelConfig& source, int64_t kv_lora_rank, int64_t rope_dim = -1);

// One layer's joint factorization of [W_K (non-rotated dims); W_V], head by head.
struct LayerConversion {
  int64_t layer = 0;
  double kept_energy = 0;     // sum_{i<Dc} s_i^2 / sum s_i^2
  double relative_error = 0;  // ||M - M_Dc||_F / ||M||_F
};

// Writes the weights of `source` (one device, dense or low-rank projections) into `target`, a model built from
// mla_config_for(source.config(), ...): the attention as above, every other parameter copied by name. Error when a
// target parameter is left unset or the models do not match.
std::vector<LayerConversion> convert_to_mla(const model::Gpt& source, model::Gpt& target);

}  // namespace mlagpt::trainer
