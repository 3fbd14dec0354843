import { useState } from "preact/hooks";
import { signIn } from "./fhir";
import { I18n, initialLang, MESSAGES, saveLang, type Lang } from "./i18n";
import { LanguageSwitch } from "./app";

export function SignIn(props: { failed: boolean }) {
  const [lang, setLang] = useState<Lang>(initialLang());
  saveLang(lang);
  const t = MESSAGES[lang];
  return (
    <I18n.Provider value={{ lang, t }}>
      <header class="top">
        <p class="brand">{t.appName}</p>
        <LanguageSwitch lang={lang} onChange={setLang} />
      </header>
      <main id="main" class="signin">
        <h1>{t.signInTitle}</h1>
        <p>{t.signInIntro}</p>
        {props.failed && (
          <p role="alert" class="error">
            {t.signInFailed}
          </p>
        )}
        <button type="button" class="primary" data-sign-in onClick={() => void signIn()}>
          {t.signIn}
        </button>
      </main>
    </I18n.Provider>
  );
}
