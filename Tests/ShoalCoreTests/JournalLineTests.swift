import ShoalCore
import Testing

@Suite struct JournalLineTests {
    @Test func aLineIsKeyValueTokensWithTheEventFirst() throws {
        let line = JournalLine("subscribe", ["peer": "3fa2c41b09d87e15", "po": "4", "bins": "3,4,5", "reason": "neighbour"])
        #expect(line.text == "event=subscribe peer=3fa2c41b09d87e15 po=4 bins=3,4,5 reason=neighbour")
        let parsed = try #require(JournalLine(parsing: line.text))
        #expect(parsed == line)
        #expect(parsed["peer"] == "3fa2c41b09d87e15" && parsed["event"] == "subscribe" && parsed["nothing"] == nil)
        #expect(parsed.bins == [3, 4, 5])
        #expect(JournalLine(parsing: "event=reconcile depth=2->3 radius=0->0 connected=7")?["depth"] == "2->3")
        #expect(JournalLine(parsing: "event=x bin=7 bins=1,2,x")?.bins == [7, 1, 2], "in token order")
    }

    @Test(arguments: [
        #"{"decision":"subscribe","bin":1}"#, "subscribe bin 3", "", "event=x  po=1", "po=1 event=x", "event=",
        "Event=x", "event=x po", "event=x po=1 ", "event=x p o=1", "event=x\tpo=1",
    ])
    func freeTextDoesNotParse(text: String) {
        #expect(JournalLine(parsing: text) == nil)
    }

    @Test(arguments: [
        (JournalLine.Filter(), [true, true, true, true]),
        (JournalLine.Filter(peerPrefix: "3FA2"), [true, false, false, false]),
        (JournalLine.Filter(peerPrefix: "3fa2c41b09d87e15" + String(repeating: "0", count: 48)), [true, false, false, false]),
        (JournalLine.Filter(peerPrefix: "3fa2c41b09d87e16"), [false, false, false, false]),
        (JournalLine.Filter(bin: 4), [true, false, false, false]),
        (JournalLine.Filter(bin: 7), [false, false, true, false]),
        (JournalLine.Filter(event: "cancel"), [false, false, true, false]),
        (JournalLine.Filter(peerPrefix: "3fa2", event: "cancel"), [false, false, false, false]),
        (JournalLine.Filter(peerPrefix: "77", bin: 7, event: "cancel"), [false, false, true, false]),
        (JournalLine.Filter(event: "reconcile"), [false, true, false, false]),
    ] as [(JournalLine.Filter, [Bool])])
    func aFilterKeepsTheLinesEveryGivenFilterMatchesAndFreeTextOnlyWhenThereIsNone(filter: JournalLine.Filter, expected: [Bool]) {
        let lines = [
            "event=subscribe peer=3fa2c41b09d87e15 po=4 bins=3,4,5 reason=neighbour",
            "event=reconcile depth=2->3 radius=0->0 connected=7",
            "event=cancel peer=77aa000000000000 po=1 bin=7 reason=left-neighbourhood",
            #"{"decision":"subscribe","bin":4}"#,
        ]
        #expect(lines.map(filter.matches) == expected)
    }
}
