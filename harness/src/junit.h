// The JUnit XML of a matrix, shaped like the schema Jenkins validates against (the xunit
// plugin's junit-10.xsd; tests/matrix/junit-jenkins.xsd restates it and a test validates every
// junit.xml we write with xmllint):
//   <testsuites name tests failures errors skipped time>
//     <testsuite name=PROFILE tests failures errors skipped time timestamp hostname>
//       <properties>  cowlab_version, kernel_release, accel, then one property per measurement,
//                     named DRIVER/CASE/MEASUREMENT, valued "64.0 MiB (67108864 B)"
//       <testcase classname=PROFILE.DRIVER name=SCENARIO[k=v,...] time>  in numeric sweep order
//         <failure message=FIRST FAILED EXPECTATION type=fail> every failed expectation
//         <error message=REASON type=STATUS>, <skipped message=REASON>
//         <system-out> the guest console excerpt, when there is one
// Times are plain decimals ("12.500"): the schema's SUREFIRE_TIME pattern has no exponent.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cowlab/harness/report.h"
#include "cowlab/result.h"

namespace cowlab::harness::detail {

// `results` are the cells in report order (sorted by sort_results()).
Result<std::string> junit_xml(const MatrixReport& report,
                              const std::vector<nlohmann::json>& results);

// Orders cells by scenario, profile, driver, then sweep point with sizes and numbers compared by
// value (1MiB < 16MiB < 64MiB), not as text.
void sort_results(std::vector<nlohmann::json>& results);

// "size=16MiB,files=4" (keys in the scenario's order as stored).
std::string sweep_label(const nlohmann::json& result);

// The unit of a measurement: from the result's "units" map, else "" (a plain number).
std::string measurement_unit(const nlohmann::json& result, const std::string& name);

}  // namespace cowlab::harness::detail
