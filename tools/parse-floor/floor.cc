/*
 * ngx_llm_gateway: how fast the best SIMD JSON parser reads the bench's
 * chat body, as a floor for what the gateway's tape and walk cost
 * (t/unit/llm_unit bench prints those).  A measuring tool only: the
 * module does not use simdjson.
 *
 *   llm_unit chat-body > body.json && parse-floor body.json
 *
 * Built by tools/parse-floor/run.sh (apt-get install libsimdjson-dev).
 */

#include <simdjson.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>


static double
ns_per(std::chrono::steady_clock::time_point t0, size_t iters)
{
    auto  d = std::chrono::steady_clock::now() - t0;

    return std::chrono::duration<double, std::nano>(d).count() / iters;
}


int
main(int argc, char **argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: parse-floor BODY.json\n");
        return 2;
    }

    simdjson::padded_string  body;

    if (simdjson::padded_string::load(argv[1]).get(body)) {
        std::fprintf(stderr, "parse-floor: cannot read %s\n", argv[1]);
        return 2;
    }

    const size_t  iters = 200000;
    size_t        sum = 0;

    /* the whole document into simdjson's tape: validation included */

    simdjson::dom::parser  dom;

    auto  t0 = std::chrono::steady_clock::now();

    for (size_t i = 0; i < iters; i++) {
        simdjson::dom::element  doc;

        if (dom.parse(body).get(doc)) {
            return 1;
        }

        sum += doc.is_object();
    }

    std::printf("simdjson %s, %zu-byte body\n",
                simdjson::get_active_implementation()->name().c_str(),
                body.size());
    std::printf("  dom::parser::parse (tape, validated): %.0f ns\n",
                ns_per(t0, iters));

    /* the same, and what the gateway reads of it */

    t0 = std::chrono::steady_clock::now();

    for (size_t i = 0; i < iters; i++) {
        simdjson::dom::element  doc;

        if (dom.parse(body).get(doc)) {
            return 1;
        }

        std::string_view  model;
        int64_t           max = 0;

        if (doc["model"].get(model) || doc["max_tokens"].get(max)) {
            return 1;
        }

        sum += model.size() + max;

        for (simdjson::dom::element m : doc["messages"]) {
            std::string_view  role, content;

            if (m["role"].get(role) || m["content"].get(content)) {
                return 1;
            }

            sum += role.size() + content.size();
        }
    }

    std::printf("  the same and model, max_tokens, each message's role "
                "and content: %.0f ns\n", ns_per(t0, iters));

    /* on demand: only what is read is parsed (the rest is skipped) */

    simdjson::ondemand::parser  od;

    t0 = std::chrono::steady_clock::now();

    for (size_t i = 0; i < iters; i++) {
        simdjson::ondemand::document  doc;

        if (od.iterate(body).get(doc)) {
            return 1;
        }

        for (auto field : doc.get_object()) {
            std::string_view  key = field.unescaped_key().value();

            if (key == "model") {
                sum += field.value().get_string().value().size();

            } else if (key == "max_tokens") {
                sum += field.value().get_int64().value();

            } else if (key == "messages") {
                for (auto m : field.value().get_array()) {
                    for (auto f : m.get_object()) {
                        sum += f.value().get_string().value().size();
                    }
                }
            }

            /* other members are skipped unread */
        }
    }

    std::printf("  ondemand, the same members (not a full validation): "
                "%.0f ns\n", ns_per(t0, iters));

    /* the sum is used, so that the compiler keeps every read */

    return sum == 42 ? 1 : 0;
}
