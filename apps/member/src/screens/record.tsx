// Download my record: Patient/[id]/$everything, every page, as one JSON file.
import { useState } from "preact/hooks";
import { type Api, problem, type Resource } from "../fhir";
import { useI18n } from "../i18n";
import { Notice, Screen } from "../ui";

export function Record(props: { api: Api }) {
  const { api } = props;
  const { t } = useI18n();
  const [file, setFile] = useState<{ url: string; count: number }>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const name = "my-health-record.json";

  async function download() {
    setBusy(true);
    setError(undefined);
    try {
      const pages = await api.pages(`Patient/${api.patientId}/$everything`);
      const entry = pages.flatMap((page: Resource) => page.entry ?? []);
      const bundle = {
        resourceType: "Bundle",
        type: "collection",
        timestamp: new Date().toISOString(),
        entry: entry.map((e: any) => ({ fullUrl: e.fullUrl, resource: e.resource })),
      };
      const blob = new Blob([JSON.stringify(bundle, null, 2)], { type: "application/fhir+json" });
      if (file) URL.revokeObjectURL(file.url);
      const url = URL.createObjectURL(blob);
      setFile({ url, count: entry.length });
      const link = document.createElement("a");
      link.href = url;
      link.download = name;
      link.click();
    } catch (failure) {
      setError(`${t.failed} ${problem(failure)}`);
    } finally {
      setBusy(false);
    }
  }

  return (
    <Screen title={t.navRecord} intro={t.recordIntro}>
      <p>
        <button type="button" class="primary" onClick={download} disabled={busy}>
          {t.recordDownload}
        </button>
      </p>
      <Notice
        text={file ? `${t.recordReady} ${file.count} ${t.recordItems}.` : undefined}
      />
      {file && (
        <p>
          <a href={file.url} download={name}>
            {t.recordSave} ({name})
          </a>
        </p>
      )}
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
    </Screen>
  );
}
