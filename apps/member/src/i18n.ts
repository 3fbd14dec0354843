// English and Spanish. The choice is remembered in localStorage and set as <html lang>.
import { createContext } from "preact";
import { useContext } from "preact/hooks";

export type Lang = "en" | "es";
const KEY = "cmfhir-member-lang";

const en = {
  appName: "My care",
  language: "Language",
  skip: "Skip to the main content",
  signInTitle: "Welcome",
  signInIntro:
    "See your care team, your goals and your care plan, answer your care team's questions, and see who looked at your record.",
  signIn: "Sign in",
  signOut: "Sign out",
  signInFailed: "Signing in did not work. Please try again.",
  loading: "Loading…",
  failed: "Something went wrong:",
  menu: "Menu",
  hello: "Hello",
  navTeam: "My care team",
  navGoals: "My goals",
  navPlan: "My care plan",
  navAppointments: "My appointments",
  navAnswers: "About me",
  navRate: "Rate my last contact",
  navAccess: "Who looked at my record",
  navRecord: "Download my record",
  teamIntro: "These are the people who help with your care, and how to reach them.",
  teamNone: "No care team is listed for you yet.",
  phone: "Phone",
  email: "Email",
  noContact: "No phone or email listed.",
  goalsIntro: "Your goals, in your own words. You can add a goal or change one.",
  goalsNone: "You have no goals written down yet.",
  goalNew: "A new goal, in my own words",
  goalAdd: "Add goal",
  goalAdded: "Your goal was added.",
  goalEdit: "Change",
  goalEditLabel: "My goal",
  goalSave: "Save",
  goalSaved: "Your goal was saved.",
  cancel: "Cancel",
  goalEmpty: "Please write your goal first.",
  status: "Status",
  goalStatus: {
    proposed: "proposed",
    planned: "planned",
    accepted: "accepted",
    active: "working on it",
    "on-hold": "on hold",
    completed: "done",
    cancelled: "stopped",
    rejected: "not taken up",
  } as Record<string, string>,
  planIntro: "The plan you and your care team made together.",
  planNone: "You have no active care plan yet.",
  planPrint: "Print my care plan",
  planActivities: "What we will do",
  planGoals: "Goals in this plan",
  planPeriod: "Dates",
  planDue: "When",
  appointmentsIntro: "Your appointments from today on.",
  appointmentsNone: "You have no upcoming appointments.",
  where: "With",
  answersIntro:
    "Tell your care team about yourself. Share only what you want. You can change your answers at any time.",
  answersSave: "Save my answers",
  answersSaved: "Your answers were saved.",
  answersMissing: "Please answer:",
  required: "(required)",
  yes: "Yes",
  no: "No",
  other: "Something else (in my own words)",
  otherLabel: "In my own words",
  choose: "Choose…",
  rateIntro: "Tell your care team how your last contact went. It takes a few taps.",
  rateNone: "There is no contact to rate yet.",
  rateContact: "Your last contact",
  rateAsked: "Your care team asked how this contact went",
  rateOverall: "Overall, how was this contact?",
  rateScale: ["Very poor", "Poor", "Okay", "Good", "Excellent"],
  rateHelpful: "How helpful was it? (you can skip this)",
  rateHelpfulOptions: ["Very helpful", "Somewhat helpful", "Not helpful"],
  rateSend: "Send",
  rateThanks: "Thank you. You rated this contact",
  rateOutOf: "out of 5.",
  ratePick: "Please choose a rating first.",
  by: "with",
  accessIntro: "Every time someone opens or changes your record, it is written down. Here is who it was.",
  accessNone: "Nobody else has looked at your record yet.",
  accessMine: "Show my own visits too",
  someone: "Someone",
  you: "You",
  anApp: "A connected system",
  viewed: "viewed",
  changed: "changed",
  added: "added to",
  deleted: "removed from",
  on: "on",
  recordIntro:
    "Download everything this service holds about you, as one file (FHIR JSON) you can keep or give to another service.",
  recordDownload: "Download my record",
  recordReady: "Your record is ready:",
  recordItems: "items",
  recordSave: "Save the file again",
  what: {
    CarePlan: "your care plan",
    Goal: "your goals",
    Appointment: "your appointments",
    QuestionnaireResponse: "your answers",
    Communication: "your contacts",
    CareTeam: "your care team",
    Condition: "your health conditions",
    MedicationRequest: "your medicines",
    MedicationStatement: "your medicines",
    Encounter: "your visits",
    Observation: "your test results",
    EpisodeOfCare: "your enrollment",
    DetectedIssue: "your care reminders",
    Patient: "your record",
    AuditEvent: "the list of who looked at your record",
  } as Record<string, string>,
  whatDefault: "your record",
  roles: {
    "care-manager": "your care manager",
    supervisor: "a care management supervisor",
    "peer-support": "your peer support specialist",
    "family-navigator": "your family navigator",
    "community-health-worker": "your community health worker",
    extender: "your care manager's assistant",
    pcp: "your primary care provider",
    "bh-provider": "your behavioral health provider",
    guardian: "your guardian",
    family: "your family member",
  } as Record<string, string>,
  roleDefault: "a member of your care team",
  roleStaff: "staff",
};

export type Messages = typeof en;

const es: Messages = {
  appName: "Mi cuidado",
  language: "Idioma",
  skip: "Ir al contenido principal",
  signInTitle: "Bienvenida y bienvenido",
  signInIntro:
    "Vea a su equipo de cuidado, sus metas y su plan de cuidado, responda las preguntas de su equipo y vea quién miró su expediente.",
  signIn: "Iniciar sesión",
  signOut: "Cerrar sesión",
  signInFailed: "No se pudo iniciar sesión. Inténtelo de nuevo.",
  loading: "Cargando…",
  failed: "Algo salió mal:",
  menu: "Menú",
  hello: "Hola",
  navTeam: "Mi equipo de cuidado",
  navGoals: "Mis metas",
  navPlan: "Mi plan de cuidado",
  navAppointments: "Mis citas",
  navAnswers: "Sobre mí",
  navRate: "Calificar mi último contacto",
  navAccess: "Quién miró mi expediente",
  navRecord: "Descargar mi expediente",
  teamIntro: "Estas son las personas que le ayudan con su cuidado, y cómo comunicarse con ellas.",
  teamNone: "Todavía no hay un equipo de cuidado para usted.",
  phone: "Teléfono",
  email: "Correo electrónico",
  noContact: "No hay teléfono ni correo.",
  goalsIntro: "Sus metas, en sus propias palabras. Puede agregar una meta o cambiarla.",
  goalsNone: "Todavía no tiene metas escritas.",
  goalNew: "Una meta nueva, en mis propias palabras",
  goalAdd: "Agregar meta",
  goalAdded: "Su meta fue agregada.",
  goalEdit: "Cambiar",
  goalEditLabel: "Mi meta",
  goalSave: "Guardar",
  goalSaved: "Su meta fue guardada.",
  cancel: "Cancelar",
  goalEmpty: "Por favor escriba su meta primero.",
  status: "Estado",
  goalStatus: {
    proposed: "propuesta",
    planned: "planeada",
    accepted: "aceptada",
    active: "trabajando en ella",
    "on-hold": "en pausa",
    completed: "lograda",
    cancelled: "detenida",
    rejected: "no aceptada",
  },
  planIntro: "El plan que usted y su equipo de cuidado hicieron juntos.",
  planNone: "Todavía no tiene un plan de cuidado activo.",
  planPrint: "Imprimir mi plan de cuidado",
  planActivities: "Lo que vamos a hacer",
  planGoals: "Metas de este plan",
  planPeriod: "Fechas",
  planDue: "Cuándo",
  appointmentsIntro: "Sus citas desde hoy en adelante.",
  appointmentsNone: "No tiene citas próximas.",
  where: "Con",
  answersIntro:
    "Cuéntele a su equipo de cuidado sobre usted. Comparta solo lo que quiera. Puede cambiar sus respuestas cuando quiera.",
  answersSave: "Guardar mis respuestas",
  answersSaved: "Sus respuestas fueron guardadas.",
  answersMissing: "Por favor responda:",
  required: "(obligatorio)",
  yes: "Sí",
  no: "No",
  other: "Otra cosa (en mis propias palabras)",
  otherLabel: "En mis propias palabras",
  choose: "Elija…",
  rateIntro: "Díganos cómo fue su último contacto. Solo toma unos toques.",
  rateNone: "Todavía no hay un contacto para calificar.",
  rateContact: "Su último contacto",
  rateAsked: "Su equipo de cuidado pregunta cómo fue este contacto",
  rateOverall: "En general, ¿cómo fue este contacto?",
  rateScale: ["Muy malo", "Malo", "Regular", "Bueno", "Excelente"],
  rateHelpful: "¿Qué tan útil fue? (puede saltar esta pregunta)",
  rateHelpfulOptions: ["Muy útil", "Algo útil", "Nada útil"],
  rateSend: "Enviar",
  rateThanks: "Gracias. Usted calificó este contacto con",
  rateOutOf: "de 5.",
  ratePick: "Por favor elija una calificación primero.",
  by: "con",
  accessIntro:
    "Cada vez que alguien abre o cambia su expediente, queda anotado. Aquí está quién fue.",
  accessNone: "Nadie más ha mirado su expediente todavía.",
  accessMine: "Mostrar también mis propias visitas",
  someone: "Alguien",
  you: "Usted",
  anApp: "Un sistema conectado",
  viewed: "vio",
  changed: "cambió",
  added: "agregó a",
  deleted: "quitó de",
  on: "el",
  recordIntro:
    "Descargue todo lo que este servicio tiene sobre usted, en un archivo (FHIR JSON) que puede guardar o dar a otro servicio.",
  recordDownload: "Descargar mi expediente",
  recordReady: "Su expediente está listo:",
  recordItems: "elementos",
  recordSave: "Guardar el archivo otra vez",
  what: {
    CarePlan: "su plan de cuidado",
    Goal: "sus metas",
    Appointment: "sus citas",
    QuestionnaireResponse: "sus respuestas",
    Communication: "sus contactos",
    CareTeam: "su equipo de cuidado",
    Condition: "sus condiciones de salud",
    MedicationRequest: "sus medicinas",
    MedicationStatement: "sus medicinas",
    Encounter: "sus visitas",
    Observation: "sus resultados",
    EpisodeOfCare: "su inscripción",
    DetectedIssue: "sus recordatorios de cuidado",
    Patient: "su expediente",
    AuditEvent: "la lista de quién miró su expediente",
  },
  whatDefault: "su expediente",
  roles: {
    "care-manager": "su administrador/a de cuidado",
    supervisor: "un/a supervisor/a de cuidado",
    "peer-support": "su especialista de apoyo entre pares",
    "family-navigator": "su guía familiar",
    "community-health-worker": "su trabajador/a de salud comunitaria",
    extender: "el/la asistente de su administrador/a de cuidado",
    pcp: "su proveedor de atención primaria",
    "bh-provider": "su proveedor de salud mental",
    guardian: "su tutor/a",
    family: "su familiar",
  },
  roleDefault: "un miembro de su equipo de cuidado",
  roleStaff: "personal",
};

export const MESSAGES: Record<Lang, Messages> = { en, es };

export function initialLang(): Lang {
  const saved = localStorage.getItem(KEY);
  if (saved === "en" || saved === "es") return saved;
  return navigator.language?.toLowerCase().startsWith("es") ? "es" : "en";
}

export function saveLang(lang: Lang): void {
  localStorage.setItem(KEY, lang);
  document.documentElement.lang = lang;
  document.title = MESSAGES[lang].appName;
}

export const I18n = createContext<{ lang: Lang; t: Messages }>({ lang: "en", t: en });

export function useI18n(): { lang: Lang; t: Messages } {
  return useContext(I18n);
}

/** "3 October" (with the year when it is not this year), in the chosen language. */
export function dayMonth(value: string | undefined, lang: Lang): string {
  if (!value) return "";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return value;
  const options: Intl.DateTimeFormatOptions = { day: "numeric", month: "long" };
  if (date.getFullYear() !== new Date().getFullYear()) options.year = "numeric";
  // A plain date (2026-10-03) is that day wherever the reader is.
  if (/^\d{4}-\d{2}-\d{2}$/.test(value)) options.timeZone = "UTC";
  return new Intl.DateTimeFormat(lang === "es" ? "es" : "en-GB", options).format(date);
}

export function dateTime(value: string | undefined, lang: Lang): string {
  if (!value) return "";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return value;
  return new Intl.DateTimeFormat(lang === "es" ? "es" : "en-GB", {
    weekday: "long",
    day: "numeric",
    month: "long",
    year: "numeric",
    hour: "numeric",
    minute: "2-digit",
  }).format(date);
}
