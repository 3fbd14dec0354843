// Prints what the SMART JavaScript client's getFhirRelease() and getFhirVersion() make of
// the server at the base URL given (4 for R4; 0 for a version it does not know, as 4.3.0).
const smart = require("fhirclient");

async function main() {
  const client = new smart.FhirClient(process.argv[2]);
  const release = await client.getFhirRelease();
  const version = await client.getFhirVersion();
  process.stdout.write(JSON.stringify({ release, version }) + "\n");
}

main().catch((error) => {
  process.stderr.write(String(error) + "\n");
  process.exit(1);
});
