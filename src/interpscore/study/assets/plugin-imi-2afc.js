/* jsPsych 8 plugin for the IMI 2-AFC task (Zimmermann, Klein & Brendel, NeurIPS 2023).

   Nine minimally activating references on the left, nine maximally activating references on the
   right, the two queries in the centre in random order, and a row of confidence buttons for
   each query. What each button means (its row and confidence) is the study's protocol
   (`interpscore.protocol`, carried in study.json as `buttons`), not a rule of this file. The max
   query is always the correct answer: choice 'a' = the min query, 'b' = the max query. */
var jsPsychImi2afc = (function (jspsych) {
  "use strict";
  const P = jspsych.ParameterType;

  const info = {
    name: "imi-2afc",
    version: "1.0.0",
    parameters: {
      min_query: { type: P.IMAGE, default: undefined },
      max_query: { type: P.IMAGE, default: undefined },
      min_references: { type: P.IMAGE, default: undefined, array: true },
      max_references: { type: P.IMAGE, default: undefined, array: true },
      /** What each button means: [{row: "upper" | "lower", confidence}], by button number. */
      buttons: { type: P.COMPLEX, default: undefined, array: true },
      catch_trial: { type: P.BOOL, default: false },
      is_demo: { type: P.BOOL, default: false },
      /** Show the queries in random order (recorded as `switched_queries`). */
      randomize_queries: { type: P.BOOL, default: true },
      prompt: {
        type: P.HTML_STRING,
        default: "Which image in the centre matches the <b>right examples</b> better?",
      },
      /** Where in the block this trial is, shown after the prompt ("3 of 45"). */
      progress: { type: P.HTML_STRING, default: "" },
      /** Buttons stay disabled this long (ms), so that every trial is looked at. */
      enable_buttons_after: { type: P.INT, default: 0 },
      /** Mark the answer right or wrong and wait for "Continue". */
      feedback: { type: P.BOOL, default: true },
    },
    data: {
      rt: { type: P.INT },
      button_pressed: { type: P.INT },
      switched_queries: { type: P.BOOL },
      confidence: { type: P.INT },
      choice: { type: P.STRING },
      correct: { type: P.BOOL },
      min_query: { type: P.IMAGE },
      max_query: { type: P.IMAGE },
      min_references: { type: P.IMAGE, array: true },
      max_references: { type: P.IMAGE, array: true },
      catch_trial: { type: P.BOOL },
      is_demo: { type: P.BOOL },
    },
  };

  /** A study-relative path as a URL (each folder name escaped: layer names may hold '#'). */
  function imageUrl(path) {
    return path.split("/").map(encodeURIComponent).join("/");
  }

  /** What one press of `button` means; the same rule for people and simulated answers. */
  function answerData(trial, button, switched, rt) {
    const upperRow = trial.buttons[button].row === "upper";
    // the upper query is the min query unless the queries were switched
    const choice = upperRow !== switched ? "a" : "b";
    return {
      rt: rt,
      button_pressed: button,
      switched_queries: switched,
      confidence: trial.buttons[button].confidence,
      choice: choice,
      correct: choice === "b",
      min_query: trial.min_query,
      max_query: trial.max_query,
      min_references: trial.min_references,
      max_references: trial.max_references,
      catch_trial: trial.catch_trial,
      is_demo: trial.is_demo,
    };
  }

  function grid(paths, title, side) {
    const images = paths.map((p) => `<img class="imi-reference" src="${imageUrl(p)}" alt="">`);
    return `<div class="imi-side imi-${side}"><div class="imi-title">${title}</div>` +
      `<div class="imi-grid">${images.join("")}</div></div>`;
  }

  function buttonRow(trial, row) {
    const buttons = trial.buttons.map((b, i) => b.row !== row ? "" :
      `<button class="jspsych-btn imi-answer" data-button="${i}">${b.confidence}</button>`);
    return `<div class="imi-row">${buttons.join("")}</div>`;
  }

  function buttonsOf(trial, row) {
    return trial.buttons.flatMap((b, i) => (b.row === row ? [i] : []));
  }

  function layout(trial, upper, lower) {
    const centre = `<div class="imi-centre">` +
      `<img class="imi-query" id="imi-query-upper" src="${imageUrl(upper)}" alt="">` +
      buttonRow(trial, "upper") +
      `<div class="imi-hint">1 = unsure &nbsp;&middot;&nbsp; ${Math.max(...trial.buttons.map((b) => b.confidence))} = sure</div>` +
      buttonRow(trial, "lower") +
      `<img class="imi-query" id="imi-query-lower" src="${imageUrl(lower)}" alt="">` +
      `<div class="imi-feedback" id="imi-feedback"></div></div>`;
    return `<div class="imi-prompt">${trial.prompt} ` +
      `<span class="imi-progress">${trial.progress}</span></div><div class="imi-trial">` +
      grid(trial.min_references, "Left examples", "left") + centre +
      grid(trial.max_references, "Right examples", "right") + "</div>";
  }

  class Imi2afcPlugin {
    static info = info;
    static imageUrl = imageUrl;

    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display, trial) {
      this.show(display, trial, trial.randomize_queries && Math.random() < 0.5);
    }

    show(display, trial, switched) {
      const upper = switched ? trial.max_query : trial.min_query;
      const lower = switched ? trial.min_query : trial.max_query;
      display.innerHTML = layout(trial, upper, lower);
      const buttons = Array.from(display.querySelectorAll("button.imi-answer"));
      const start = performance.now();
      const respond = (button) => {
        buttons.forEach((b) => (b.disabled = true));
        const data = answerData(trial, button, switched, Math.round(performance.now() - start));
        if (!trial.feedback) return this.jsPsych.finishTrial(data);
        const chosen = trial.buttons[button].row;
        display.querySelector(`#imi-query-${chosen}`).classList.add(
          data.correct ? "imi-correct" : "imi-wrong");
        display.querySelector("#imi-feedback").innerHTML =
          `<p>${data.correct ? "Correct!" : "Wrong."}</p>` +
          `<button class="jspsych-btn" id="imi-continue">Continue</button>`;
        display.querySelector("#imi-continue").addEventListener(
          "click", () => this.jsPsych.finishTrial(data));
      };
      buttons.forEach((b) => {
        b.disabled = trial.enable_buttons_after > 0;
        b.addEventListener("click", () => respond(Number(b.dataset.button)));
      });
      if (trial.enable_buttons_after > 0) {
        this.jsPsych.pluginAPI.setTimeout(
          () => buttons.forEach((b) => (b.disabled = false)), trial.enable_buttons_after);
      }
    }

    /* simulation_options: `p_correct` (default 0.5: a random button) and `data` with any of
       `correct`, `button_pressed`, `switched_queries`, `rt`; the other fields follow from them. */
    simulate(trial, simulation_mode, simulation_options, load_callback) {
      const data = this.simulatedData(trial, simulation_options || {});
      if (simulation_mode === "visual") {
        const display = this.jsPsych.getDisplayElement();
        this.show(display, trial, data.switched_queries);
        load_callback();
        const api = this.jsPsych.pluginAPI;
        api.clickTarget(display.querySelector(`[data-button="${data.button_pressed}"]`), data.rt);
        if (trial.feedback) {
          api.setTimeout(() => display.querySelector("#imi-continue").click(), data.rt + 200);
        }
        return;
      }
      load_callback();
      this.jsPsych.finishTrial(data);
    }

    simulatedData(trial, options) {
      const given = options.data || {};
      const random = this.jsPsych.randomization;
      const switched = given.switched_queries ?? (trial.randomize_queries && Math.random() < 0.5);
      const correct = given.correct ?? (Math.random() < (options.p_correct ?? 0.5));
      // the max query (the correct one) is in the upper row when the queries are switched
      const row = buttonsOf(trial, correct === switched ? "upper" : "lower");
      const button = given.button_pressed ?? row[random.randomInt(0, row.length - 1)];
      const rt = given.rt ?? Math.round(
        random.sampleExGaussian(1500, 300, 1 / 1000, true) + trial.enable_buttons_after);
      return answerData(trial, button, switched, rt);
    }
  }

  return Imi2afcPlugin;
})(jsPsychModule);
