// The host's validation of what a probe plugin declares: one case per refusal,
// each starting from a valid description and breaking one thing.
#include <gtest/gtest.h>

#include "description_check.hpp"

using namespace netwatcher;
using netwatcher::host::description_problems;

namespace {

FieldSchema field(std::string name, FieldType type, FieldRole role,
                  AnomalyRole anomaly = AnomalyRole::none) {
  FieldSchema f;
  f.name = std::move(name);
  f.type = type;
  f.role = role;
  f.anomaly = anomaly;
  return f;
}

PluginDescription valid() {
  PluginDescription d;
  ConfigKey extra;
  extra.name = "extra";
  extra.type = ConfigType::boolean;
  extra.default_value = false;
  ConfigKey limit;
  limit.name = "limit";
  limit.type = ConfigType::integer;
  limit.default_value = std::int64_t{10};
  d.config = {extra, limit};
  EventSchema event;
  event.name = "exchange";
  event.fields = {field("side", FieldType::text, FieldRole::label, AnomalyRole::key),
                  field("sock", FieldType::u64, FieldRole::label, AnomalyRole::connection),
                  field("latency_us", FieldType::f64, FieldRole::value, AnomalyRole::sample),
                  field("path", FieldType::text, FieldRole::text)};
  d.events = {event};
  d.metrics = {
      {"netwatcher_x_requests_total", MetricType::counter, "requests", {"method"}, {}},
      {"netwatcher_x_latency_seconds", MetricType::histogram, "latency", {}, {0.001, 0.01, 0.1}}};
  HookSpec hook;
  hook.name = "tick";
  hook.programs = {"tick_btf", "tick_tp"};
  HookSpec optional = hook;
  optional.name = "extra_tick";
  optional.enabled_by = "extra";
  d.hooks = {hook, optional};
  return d;
}

std::vector<std::string> only(std::string problem) {
  return {std::move(problem)};
}

}  // namespace

TEST(DescriptionCheck, AValidDescriptionHasNoProblems) {
  EXPECT_TRUE(description_problems(valid()).empty());
  EXPECT_TRUE(description_problems(PluginDescription{}).empty());
}

TEST(DescriptionCheck, DuplicateEventNames) {
  auto d = valid();
  d.events.push_back(d.events[0]);
  EXPECT_EQ(description_problems(d), only("event 'exchange': declared twice"));
}

TEST(DescriptionCheck, DuplicateFieldNamesInAnEvent) {
  auto d = valid();
  d.events[0].fields.push_back(field("path", FieldType::text, FieldRole::text));
  EXPECT_EQ(description_problems(d), only("event 'exchange': field 'path': declared twice"));
}

TEST(DescriptionCheck, EmptyNames) {
  auto d = valid();
  d.events.push_back({});
  EXPECT_EQ(description_problems(d), only("event #2: empty name"));
  d = valid();
  d.events[0].fields.push_back(field("", FieldType::u64, FieldRole::value));
  EXPECT_EQ(description_problems(d), only("event 'exchange': field #5: empty name"));
  d = valid();
  d.config.push_back({});
  EXPECT_EQ(description_problems(d), only("config key #3: empty name"));
  d = valid();
  d.metrics.push_back({});
  EXPECT_EQ(description_problems(d), only("metric #3: empty name"));
  d = valid();
  d.hooks.push_back({});
  EXPECT_EQ(description_problems(d), only("hook #3: empty name"));
}

TEST(DescriptionCheck, SampleRoleOnANonNumericField) {
  auto d = valid();
  d.events[0].fields[3].anomaly = AnomalyRole::sample;
  EXPECT_EQ(description_problems(d),
            only("event 'exchange': field 'path': anomaly role 'sample' needs a u64, i64 or f64 "
                 "field, not text"));
}

TEST(DescriptionCheck, KeyOrConnectionRoleOnANonLabel) {
  auto d = valid();
  d.events[0].fields[2].anomaly = AnomalyRole::key;
  EXPECT_EQ(description_problems(d),
            only("event 'exchange': field 'latency_us': anomaly role 'key' needs a label field, "
                 "not a value"));
  d = valid();
  d.events[0].fields[3].anomaly = AnomalyRole::connection;
  EXPECT_EQ(description_problems(d),
            only("event 'exchange': field 'path': anomaly role 'connection' needs a label "
                 "field, not a text"));
}

TEST(DescriptionCheck, AFieldNamedAnomalyWhereTheHostAppendsOne) {
  auto d = valid();
  d.events[0].fields.push_back(field("anomaly", FieldType::boolean, FieldRole::label));
  EXPECT_EQ(description_problems(d),
            only("event 'exchange': field 'anomaly': reserved, the host appends it to events "
                 "with samples"));
}

TEST(DescriptionCheck, MetricFamilyNamesOutsideThePrometheusSyntax) {
  for (const char* name : {"9lives", "netwatcher-x-total", "netwatcher x", "naïve"}) {
    auto d = valid();
    d.metrics[0].name = name;
    EXPECT_EQ(description_problems(d),
              only(std::string("metric '") + name + "': name must match [a-zA-Z_:][a-zA-Z0-9_:]*"));
  }
  auto d = valid();
  d.metrics[0].name = ":netwatcher_x:y_total";  // colons are allowed
  EXPECT_TRUE(description_problems(d).empty());
}

TEST(DescriptionCheck, DuplicateMetricNames) {
  auto d = valid();
  d.metrics.push_back(d.metrics[0]);
  EXPECT_EQ(description_problems(d), only("metric 'netwatcher_x_requests_total': declared twice"));
}

TEST(DescriptionCheck, BadOrDuplicateLabelNames) {
  auto d = valid();
  d.metrics[0].labels = {"method", "method"};
  EXPECT_EQ(description_problems(d),
            only("metric 'netwatcher_x_requests_total': label 'method': declared twice"));
  d.metrics[0].labels = {"__reserved"};
  EXPECT_EQ(description_problems(d),
            only("metric 'netwatcher_x_requests_total': label '__reserved': name must match "
                 "[a-zA-Z_][a-zA-Z0-9_]* and not start with __"));
}

TEST(DescriptionCheck, ACgroupIdLabelOnAGaugeOrBesideTheLabelsItBecomes) {
  auto d = valid();
  d.metrics[0].labels = {"method", "cgroup_id"};
  d.metrics[1].labels = {"cgroup_id"};
  EXPECT_EQ(description_problems(d), std::vector<std::string>{}) << "a counter and a histogram";
  d.metrics[0].type = MetricType::gauge;
  d.metrics[0].labels = {"cgroup_id", "method"};  // said once, wherever it is
  EXPECT_EQ(description_problems(d),
            only("metric 'netwatcher_x_requests_total': a cgroup_id label needs a counter or a "
                 "histogram (a gauge cannot be summed over cgroups)"));
  d.metrics[0].type = MetricType::counter;
  d.metrics[0].labels = {"pod", "cgroup_id"};
  EXPECT_EQ(description_problems(d),
            only("metric 'netwatcher_x_requests_total': label 'pod' is the host's beside a "
                 "cgroup_id label"));
}

TEST(DescriptionCheck, HistogramWithoutAscendingBuckets) {
  auto d = valid();
  d.metrics[1].buckets = {};
  EXPECT_EQ(description_problems(d),
            only("metric 'netwatcher_x_latency_seconds': histogram without buckets"));
  d.metrics[1].buckets = {0.001, 0.1, 0.01};
  EXPECT_EQ(description_problems(d),
            only("metric 'netwatcher_x_latency_seconds': histogram buckets must ascend strictly "
                 "(bucket 3 = 0.010000 after 0.100000)"));
  d.metrics[1].buckets = {0.1, 0.1};
  EXPECT_EQ(description_problems(d).size(), 1u);
}

TEST(DescriptionCheck, HookWithNoCandidatePrograms) {
  auto d = valid();
  d.hooks[0].programs.clear();
  EXPECT_EQ(description_problems(d), only("hook 'tick': no candidate programs"));
  d = valid();
  d.hooks[0].programs.push_back("");
  EXPECT_EQ(description_problems(d), only("hook 'tick': candidate #3: empty program name"));
}

TEST(DescriptionCheck, DuplicateHookNames) {
  auto d = valid();
  d.hooks.push_back(d.hooks[0]);
  EXPECT_EQ(description_problems(d), only("hook 'tick': declared twice"));
}

TEST(DescriptionCheck, EnabledByNotADeclaredBooleanKey) {
  auto d = valid();
  d.hooks[1].enabled_by = "limit";  // an integer
  EXPECT_EQ(description_problems(d),
            only("hook 'extra_tick': enabled_by names 'limit', which is not a declared boolean "
                 "config key"));
  d.hooks[1].enabled_by = "nope";
  EXPECT_EQ(description_problems(d),
            only("hook 'extra_tick': enabled_by names 'nope', which is not a declared boolean "
                 "config key"));
}

TEST(DescriptionCheck, DuplicateConfigKeys) {
  auto d = valid();
  d.config.push_back(d.config[1]);
  EXPECT_EQ(description_problems(d), only("config key 'limit': declared twice"));
}

TEST(DescriptionCheck, TheImplicitEnabledKeyDeclared) {
  auto d = valid();
  d.config.push_back(d.config[0]);
  d.config.back().name = "enabled";
  EXPECT_EQ(description_problems(d), only("config key 'enabled': implicit, declared by the host"));
}

TEST(DescriptionCheck, EveryProblemIsReported) {
  auto d = valid();
  d.events.push_back(d.events[0]);
  d.hooks[0].programs.clear();
  EXPECT_EQ(description_problems(d).size(), 2u);
}
