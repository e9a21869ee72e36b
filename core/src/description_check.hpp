// Validation of what a probe plugin declares (PluginDescription), at load.
#pragma once

#include <string>
#include <vector>

#include "netwatcher/plugin.hpp"

namespace netwatcher::host {

// Every problem of `description`, each naming the item and the reason, e.g.
// "event 'tcp_close': field 'pid': declared twice". Empty when it is valid.
// What is checked:
//   config keys: a name, not "enabled" (implicit), not declared twice;
//   events: a name, not declared twice; fields: a name, not declared twice,
//     AnomalyRole::sample only on u64/i64/f64 fields, key and connection only
//     on label fields, no field "anomaly" where the host appends one;
//   metric families: a name matching [a-zA-Z_:][a-zA-Z0-9_:]*, not declared
//     twice, label names matching [a-zA-Z_][a-zA-Z0-9_]* once each,
//     histograms with at least one bucket, strictly ascending;
//   hooks: a name, not declared twice, at least one candidate program, no
//     empty candidate, enabled_by naming a declared boolean config key.
std::vector<std::string> description_problems(const PluginDescription& description);

}  // namespace netwatcher::host
