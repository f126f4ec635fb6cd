// Validates prometheus-operator custom resources against the CRDs' OpenAPI schemas, as shipped by
// @kubernetes-models/prometheus-operator. Reads a JSON array of resources on stdin; prints one
// line per resource: `ok KIND/NAME`, `invalid KIND/NAME: WHY`, or `none KIND/NAME` (not a
// monitoring.coreos.com/v1 kind this package knows).
import * as v1 from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
for (const resource of JSON.parse(Buffer.concat(chunks).toString())) {
  const id = `${resource.kind}/${resource.metadata?.name}`;
  const Model = resource.apiVersion === "monitoring.coreos.com/v1" ? v1[resource.kind] : undefined;
  if (typeof Model?.prototype?.validate !== "function") {
    console.log(`none ${id}`);
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`ok ${id}`);
  } catch (e) {
    console.log(`invalid ${id}: ${String(e.message).replace(/\n/g, " ")}`);
  }
}
