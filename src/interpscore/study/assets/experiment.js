/* The study page. Reads study.json (written by `interpscore study build`), picks this
   participant's task, runs consent, instructions, the practice block (repeated until every answer
   is right, at most `max_demo_attempts` times) and the task's trials, then sends one session as
   JSON to `post_url` and/or saves it as a file in the browser.

   URL parameters: PROLIFIC_PID or workerId (the participant id; otherwise one is generated),
   task (a task number; otherwise the id's hash picks one, or chance for a generated id),
   simulate=data-only|visual with sim_p_correct (a simulated participant, marked as such). */
(async function () {
  "use strict";
  const SESSION_FORMAT = "interpscore-session/1";
  const display = document.getElementById("study");
  const params = new URLSearchParams(window.location.search);

  function randomHex(bytes) {
    const values = crypto.getRandomValues(new Uint8Array(bytes));
    return Array.from(values, (v) => v.toString(16).padStart(2, "0")).join("");
  }

  function stop(message) {
    display.innerHTML = `<p class="study-error">${message}</p>`;
    document.body.dataset.studyState = "failed";
  }

  /** The only personal datum kept: the id the recruiting platform puts in the link. */
  function participant() {
    for (const key of ["PROLIFIC_PID", "workerId"]) {
      const value = params.get(key);
      if (value) return { id: value.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64), source: key };
    }
    return { id: `anon-${randomHex(8)}`, source: "generated" };
  }

  function hash(text) {  // FNV-1a: the same id always gets the same task
    let h = 0x811c9dc5;
    for (const c of text) h = Math.imul(h ^ c.codePointAt(0), 0x01000193) >>> 0;
    return h;
  }

  function chooseTask(tasks, id, source) {
    const asked = params.get("task");
    if (asked !== null) {
      return tasks.find((t) => t.task_id === `task_${asked.replace(/^task_/, "")}`) || null;
    }
    const i = source === "generated" ? Math.floor(Math.random() * tasks.length)
      : hash(id) % tasks.length;
    return tasks[i];
  }

  let study;
  try {
    const response = await fetch("study.json", { cache: "no-cache" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    study = await response.json();
  } catch (err) {
    return stop(`The study could not be loaded (${err.message}). Please try again later.`);
  }
  document.title = study.title;
  const settings = study.settings;
  const who = participant();
  const task = chooseTask(study.tasks, who.id, who.source);
  if (task === null) {
    return stop(`This link names task ${params.get("task")}, but the study has tasks 1 to ` +
      `${study.tasks.length}. Please check the link.`);
  }
  const simulation = params.get("simulate");  // null for a person
  const session = {
    format: SESSION_FORMAT, study_id: study.study_id, session_id: randomHex(16),
    participant_id: who.id, id_source: who.source, task_id: task.task_id,
    simulated: simulation !== null, started_at: new Date().toISOString(),
  };
  let consented = false;
  let demoAttempt = 0;
  let attemptCorrect = true;  // every answer of the current practice attempt was right
  let demoPassed = study.demo.length === 0;

  const jsPsych = initJsPsych({ display_element: display, on_finish: finish });

  function message(html, label) {
    return { type: jsPsychHtmlButtonResponse, stimulus: html, choices: [label],
             data: { phase: "message" } };
  }

  function trialsOf(list, phase) {
    const progress = (i) => `(${phase === "demo" ? "practice " : ""}${i + 1} of ${list.length})`;
    return list.map((t, i) => ({
      type: jsPsychImi2afc,
      min_query: t.min_query, max_query: t.max_query,
      min_references: t.min_references, max_references: t.max_references,
      catch_trial: t.catch_trial, is_demo: phase === "demo",
      buttons: study.protocol.buttons,
      enable_buttons_after: settings.enable_buttons_after_ms,
      feedback: phase === "demo" || settings.feedback_main,
      progress: progress(i),
      // a simulated participant gets practice and catch trials right (the query is shown)
      simulation_options: phase === "demo" || t.catch_trial ? "easy" : "default",
      data: { phase: phase, model: t.model, layer: t.layer, channel: t.channel, batch: t.batch,
              mode: t.mode, query_path: t.query_path },
      on_finish: (data) => {
        if (phase !== "demo") return;
        data.demo_attempt = demoAttempt;
        attemptCorrect = attemptCorrect && data.correct;
      },
    }));
  }

  const images = study.demo.concat(task.trials).flatMap(
    (t) => [t.min_query, t.max_query, ...t.min_references, ...t.max_references]);
  const timeline = [
    { type: jsPsychPreload, images: [...new Set(images)].map(jsPsychImi2afc.imageUrl),
      message: "<p>Loading the images ...</p>",
      error_message: "<p>The images could not be loaded. Please reload the page.</p>" },
    { type: jsPsychHtmlButtonResponse, stimulus: study.consent_html,
      choices: ["I agree", "I do not agree"], data: { phase: "instructions" },
      simulation_options: { data: { response: 0 } },
      on_finish: (data) => {
        consented = data.response === 0;
        if (!consented) jsPsych.abortExperiment();
      } },
    { type: jsPsychInstructions, pages: study.instruction_pages, show_clickable_nav: true,
      data: { phase: "instructions" } },
  ];
  if (study.demo.length > 0) {
    timeline.push({
      timeline: [
        { timeline: trialsOf(study.demo, "demo"),
          on_timeline_start: () => { demoAttempt += 1; attemptCorrect = true; } },
        { timeline: [message("<p>Not every answer was right. Please look again and repeat the " +
                             "practice.</p>", "Repeat the practice")],
          conditional_function: () => !attemptCorrect &&
            demoAttempt < study.protocol.max_demo_attempts },
      ],
      loop_function: () => {
        demoPassed = attemptCorrect;
        return !demoPassed && demoAttempt < study.protocol.max_demo_attempts;
      },
    });
  }
  timeline.push({
    timeline: [message(study.demo.length > 0 ? "<p>Well done. Now the real trials begin.</p>"
                       : "<p>The trials begin now.</p>", "Start"),
               ...trialsOf(task.trials, "main")],
    conditional_function: () => demoPassed,
  });

  async function post(body) {
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await fetch(settings.post_url, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: body });
        // 409: an earlier attempt arrived and only its answer was lost
        if (response.ok || response.status === 409) return true;
        if (response.status < 500) return false;  // refused: trying again will not help
      } catch (err) { /* the network: try again */ }
      if (attempt === 3) return false;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  function saveFile(body) {
    const name = `${session.participant_id}_${session.task_id}_${session.session_id}.json`;
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([body], { type: "application/json" }));
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    return name;
  }

  async function finish() {
    if (!consented) {
      display.innerHTML = "<p>You chose not to take part. Nothing was recorded; you may close " +
        "this page.</p>";
      document.body.dataset.studyState = "declined";
      return;
    }
    display.innerHTML = "<p>Saving your answers ...</p>";
    session.completed = demoPassed;
    session.finished_at = new Date().toISOString();
    session.trials = jsPsych.data.get().values();
    const body = JSON.stringify(session);
    const sent = settings.post_url ? await post(body) : false;
    const keep = settings.local_save === "always" ||
      (!sent && settings.local_save === "on_failure");
    const saved = keep ? saveFile(body) : null;
    let html = demoPassed ? "<p>Thank you! You have finished the study.</p>"
      : "<p>Thank you. The practice was not passed, so the study ends here.</p>";
    if (sent) html += "<p>Your answers have been saved.</p>";
    else if (saved) html += `<p>Your answers were saved as the file <b>${saved}</b> in your ` +
      "downloads. Please send it to the researchers.</p>";
    else html += "<p>Your answers could not be saved. Please tell the researchers.</p>";
    if (settings.completion_url) {
      html += `<p><a href="${settings.completion_url}">Return to the study platform</a></p>`;
    }
    display.innerHTML = `<div id="study-end">${html}</div>`;
    document.body.dataset.studyState = sent ? "sent" : saved ? "saved" : "lost";
  }

  if (simulation) {
    const p = Number(params.get("sim_p_correct") ?? 0.8);
    jsPsych.simulate(timeline, simulation, { default: { p_correct: p }, easy: { p_correct: 1 } });
  } else {
    jsPsych.run(timeline);
  }
})();
